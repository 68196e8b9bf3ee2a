"""Min-p sampling: keep the tokens at least a fraction of the most probable one.

Nguyen, Baker, Neo, Roush, Kirsch & Shwartz-Ziv, "Turning Up the Heat: Min-p
Sampling for Creative and Coherent LLM Outputs", ICLR 2025 (arXiv:2407.01082).

With p = softmax(logits / T):

    keep token v  ⇔  p(v) ≥ p_base · max_u p(u)

so the floor scales with the model's confidence. SGLang has min-p as a
sampling parameter (``min_p``), applied after every logits processor; this
method gives the same truncation as a step of a chain (e.g. before
``penalty_decoding`` or after a contrastive method, which SGLang's own min-p
would follow rather than precede). It equals ``transformers.MinPLogitsWarper``
and SGLang's ``min_p`` (tests check both). Everything else is set to -inf.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from sglang_ilsi.methods.base import LogitsMethod, RowContext, column, scaled
from sglang_ilsi.methods.common import scratch, truncate
from sglang_ilsi.params import Param
from sglang_ilsi.registry import register


@register
class MinP(LogitsMethod):
    """Keep the tokens whose probability is at least p_base times the top token's."""

    name = "min_p"
    family = "independent/sampling"
    paper = ("Nguyen et al. 2025, Turning Up the Heat: Min-p Sampling for Creative and "
             "Coherent LLM Outputs (ICLR), arXiv:2407.01082")
    argmax_invariant = True
    params = (
        Param("p_base", "float", 0.1, "p_base: tokens below p_base · max p are removed",
              minimum=0.0, maximum=1.0, exclusive_minimum=True),
    )

    @classmethod
    def apply(cls, logits: torch.Tensor, rows: Sequence[RowContext]) -> torch.Tensor:
        s = scaled(logits, rows, out=scratch("s", logits))
        p = torch.softmax(s, dim=-1, out=scratch("p", logits))
        floor = p.amax(dim=-1, keepdim=True) * column(rows, "p_base", p)
        return truncate(logits, p >= floor, s, rows)
