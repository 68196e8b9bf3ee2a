"""Imports every built-in method so that each registers itself."""

from sglang_ilsi.methods.constrained import (  # noqa: F401
    keyword_boost,
    keyword_decay,
    length_target,
    lexical_constraints,
    monitor,
    penalty_decoding,
)
from sglang_ilsi.methods.contrastive import adaptive, look_back  # noqa: F401
from sglang_ilsi.methods.sampling import (  # noqa: F401
    epsilon,
    eta,
    mirostat,
    top_n_sigma,
    typical,
)
