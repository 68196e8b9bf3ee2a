"""Imports every built-in method so that each registers itself."""

from sglang_ilsi.methods.constrained import (  # noqa: F401
    keyword_boost,
    keyword_decay,
    length_target,
    lexical_constraints,
    monitor,
    penalty_decoding,
)
from sglang_ilsi.methods.contrastive import adaptive, dola, look_back, sled  # noqa: F401
from sglang_ilsi.methods.disturbed_prompt import (  # noqa: F401
    cad,
    cfg,
    instructive_decoding,
    pmi_decode,
    rose,
)
from sglang_ilsi.methods.model_aided import (  # noqa: F401
    contrastive_decoding,
    contrastive_decoding_beta,
    dexperts,
    linear_combination,
)
from sglang_ilsi.methods.sampling import (  # noqa: F401
    epsilon,
    eta,
    mirostat,
    top_n_sigma,
    typical,
)
