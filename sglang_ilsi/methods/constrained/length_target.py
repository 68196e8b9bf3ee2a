"""Length target: a soft, smooth push of the EOS logit toward a target length.

Kikuchi, Neubig, Sasano, Takamura & Okumura, "Controlling Output Length in Neural
Encoder-Decoders", EMNLP 2016 (arXiv:1609.09552), control length at decoding
time by hard rules on EOS in beam search (fixLen: EOS suppressed until the
desired length, where decoding stops; fixRng: hypotheses that end outside a
length range are discarded) or by training the decoder on the desired length. Without retraining, and as a soft constraint (the survey's
constrained-decoding family, Dong, Teleki & Caverlee 2024), this method shifts
the raw EOS logits by a bounded, smooth function of the current length
n = |y| (generated tokens; sampling EOS now ends the answer with n tokens):

    z'(eos) = z(eos) + s · tanh((n − T) / max(1, τ))        for every EOS id,

with T = ``target``, s = ``strength`` ≥ 0 and τ = ``tolerance``. Before the
target EOS is made less likely (down to −s), at n = T it is left alone, and
after it EOS is made more likely (up to +s); τ sets how many tokens the
transition takes (|shift| < 0.76·s within ±τ of T). Other tokens are untouched
and -inf stays -inf. Unlike fixLen, EOS is never removed, so the model can still
end early when it really wants to; s = 0 disables the method.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from sglang_ilsi.methods.base import LogitsMethod, RowContext
from sglang_ilsi.methods.common import add_sparse
from sglang_ilsi.params import Param
from sglang_ilsi.registry import register


def eos_shift(n: int, target: int, strength: float, tolerance: int) -> float:
    """s · tanh((n − T) / max(1, τ))."""
    return strength * math.tanh((n - target) / max(1, tolerance))


@register
class LengthTarget(LogitsMethod):
    """Shift EOS logits smoothly toward ending the answer at a target length."""

    name = "length_target"
    family = "independent/constrained"
    paper = ("Kikuchi et al. 2016, Controlling Output Length in Neural Encoder-Decoders "
             "(EMNLP), arXiv:1609.09552")
    argmax_invariant = False
    params = (
        Param("target", "int", 128, "T: the desired number of generated tokens",
              minimum=1, maximum=1_000_000),
        Param("strength", "float", 2.0, "s: the largest shift of the EOS logits",
              minimum=0.0, maximum=20.0),
        Param("tolerance", "int", 8, "τ: the width, in tokens, of the transition around T",
              minimum=0, maximum=1_000_000),
    )

    @classmethod
    def apply(cls, logits: torch.Tensor, rows: Sequence[RowContext]) -> torch.Tensor:
        vocab = logits.shape[-1]
        r_idx: list[int] = []
        c_idx: list[int] = []
        values: list[float] = []
        for i, row in enumerate(rows):
            shift = eos_shift(len(row.output_ids), int(row.params["target"]),
                              float(row.params["strength"]), int(row.params["tolerance"]))
            row.stats["eos_shift"] = shift
            if shift == 0.0:
                continue
            for t in sorted({int(t) for t in row.eos_token_ids if 0 <= t < vocab}):
                r_idx.append(i)
                c_idx.append(t)
                values.append(shift)
        return add_sparse(logits, r_idx, c_idx, values)
