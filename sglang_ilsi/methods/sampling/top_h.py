"""Top-H sampling: truncation with bounded entropy.

"Top-H Decoding: Adapting the Creativity and Coherence with Bounded Entropy in
Text Generation", NeurIPS 2025 (arXiv:2509.02510); the reference implementation
is ``transformers.TopHLogitsWarper``.

Let p = softmax(logits / T) over the ``top_n`` most probable tokens, sorted in
decreasing order, and H(p) = -Σ p log p its entropy. Top-H keeps the shortest
prefix whose cumulative entropy stays within a fraction α of the whole:

    keep token i  ⇔  Σ_{j ≤ i} -p_j log p_j ≤ α · H(p)      (the top token always)

so a confident (low-entropy) step keeps few tokens and an uncertain one keeps
more, unlike top-p's fixed mass or min-p's fixed ratio. This is the greedy
approximation of the paper's entropy-constrained mass maximisation that
``transformers.TopHLogitsWarper`` implements (with ``top_n = 100``), and it
equals that warper token for token. Everything else is set to -inf.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from sglang_ilsi.methods.base import LogitsMethod, RowContext, column, scaled
from sglang_ilsi.methods.common import truncate
from sglang_ilsi.params import Param
from sglang_ilsi.registry import register


@register
class TopH(LogitsMethod):
    """Keep the most probable tokens while their cumulative entropy stays within α·H."""

    name = "top_h"
    family = "independent/sampling"
    paper = ("Top-H Decoding: Adapting the Creativity and Coherence with Bounded Entropy "
             "in Text Generation (NeurIPS 2025), arXiv:2509.02510")
    argmax_invariant = True
    params = (
        Param("alpha", "float", 0.4, "α: the kept tokens' cumulative entropy is at most α·H(p)",
              minimum=0.0, maximum=1.0, exclusive_minimum=True),
        Param("top_n", "int", 100, "how many of the most probable tokens are considered",
              minimum=1, maximum=1024),
    )

    @classmethod
    def apply(cls, logits: torch.Tensor, rows: Sequence[RowContext]) -> torch.Tensor:
        s = scaled(logits, rows)
        n = min(max(int(r.params["top_n"]) for r in rows), s.shape[-1])
        top, index = torch.topk(s, n, dim=-1, largest=True, sorted=True)
        limits = column(rows, "top_n", s, dtype=torch.int64)
        beyond = torch.arange(n, device=s.device).unsqueeze(0) >= limits
        # validate_args=False: the same values, without the argument check's host read
        dist = torch.distributions.Categorical(logits=top.masked_fill(beyond, float("-inf")),
                                               validate_args=False)
        entropy_terms = -dist.probs * torch.log(dist.probs)  # NaN beyond a row's top_n: dropped
        keep_sorted = torch.cumsum(entropy_terms, dim=-1) <= dist.entropy().unsqueeze(1) * column(
            rows, "alpha", s)
        keep_sorted[:, 0] = True
        keep = torch.zeros_like(s, dtype=torch.bool).scatter_(1, index, keep_sorted)
        return truncate(logits, keep, s, rows)
