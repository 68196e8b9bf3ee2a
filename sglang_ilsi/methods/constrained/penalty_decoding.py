"""Penalty decoding: repetition penalty with a forgetting window, plus a length penalty.

Zhu, Hao & Wang, "Penalty Decoding: Well Suppress the Self-Reinforcement Effect
in Open-Ended Text Generation", EMNLP 2023 (arXiv:2310.14971).

Repetition penalty (CTRL, Keskar et al. 2019) with the paper's forgetting
mechanism: only tokens that occur among the last ``window`` generated tokens
W_t = {y_{t-w}, …, y_{t-1}} are penalised, each once, on the raw logits z:

    z'(y) = z(y) / θ   if z(y) > 0,
    z'(y) = z(y) · θ   otherwise,          for y ∈ W_t  (θ = ``penalty``).

Length penalty: a strong repetition penalty makes short outputs (the EOS token
is rarely inside the window, so it gains relative probability as the others are
penalised). The paper adds a length penalty against this; we could not check its
exact formula, so this implementation applies the same CTRL-style transform with
factor θ_len = ``length_penalty`` to the EOS logits while fewer than
``min_length`` tokens have been generated (after the repetition penalty, so an
EOS inside the window gets both). ``length_penalty = 1`` or ``min_length = 0``
disables it.

Which tokens count: as in the paper's setting, only generated tokens are in the
window by default; ``include_prompt`` slides the window over prompt + output
instead (the Hugging Face convention, where the prompt's last tokens count too).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from sglang_ilsi.methods.base import LogitsMethod, RowContext, column, on_device
from sglang_ilsi.params import Param
from sglang_ilsi.registry import register


def ctrl_penalty(logits: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """CTRL's transform: divide positive logits by θ, multiply the others (keeps -inf)."""
    return torch.where(logits > 0, logits / theta, logits * theta)


def window_tokens(row: RowContext) -> set[int]:
    """The distinct token ids in the row's forgetting window."""
    w = int(row.params["window"])
    out = list(row.output_ids[-w:])
    if row.params["include_prompt"] and len(out) < w:
        need = w - len(out)
        out = list(row.prompt_ids[-need:]) + out
    return set(out)


@register
class PenaltyDecoding(LogitsMethod):
    """Repetition penalty over a sliding window of recent tokens, with an EOS length penalty."""

    name = "penalty_decoding"
    family = "independent/constrained"
    paper = ("Zhu, Hao & Wang 2023, Penalty Decoding: Well Suppress the Self-Reinforcement "
             "Effect in Open-Ended Text Generation (EMNLP), arXiv:2310.14971")
    argmax_invariant = False
    params = (
        Param("penalty", "float", 1.5, "θ: CTRL repetition penalty for tokens in the window",
              minimum=1.0, maximum=10.0),
        Param("window", "int", 64, "forgetting window: how many recent tokens are penalised",
              minimum=1, maximum=4096),
        Param("length_penalty", "float", 1.5,
              "θ_len: CTRL-style penalty on EOS while the output is shorter than min_length",
              minimum=1.0, maximum=10.0),
        Param("min_length", "int", 16, "apply the EOS length penalty while fewer tokens than this "
              "have been generated (0 disables it)", minimum=0, maximum=1_000_000),
        Param("include_prompt", "bool", False,
              "let the window reach back into the prompt when the output is shorter than it"),
    )

    @classmethod
    def apply(cls, logits: torch.Tensor, rows: Sequence[RowContext]) -> torch.Tensor:
        vocab = logits.shape[-1]
        rep_r: list[int] = []
        rep_t: list[int] = []
        eos_r: list[int] = []
        eos_t: list[int] = []
        for i, row in enumerate(rows):
            toks = [t for t in window_tokens(row) if 0 <= t < vocab]
            rep_r += [i] * len(toks)
            rep_t += toks
            if len(row.output_ids) < int(row.params["min_length"]):
                eos = {t for t in row.eos_token_ids if 0 <= t < vocab}
                eos_r += [i] * len(eos)
                eos_t += sorted(eos)
            row.stats["penalized_tokens"] = row.stats.get("penalized_tokens", 0.0) + len(toks)
        out = logits.clone()
        # Only the penalised entries change: gather them, transform, write back
        # (the repetition penalty first, so that an EOS in the window gets both).
        for r_idx, t_idx, name in ((rep_r, rep_t, "penalty"), (eos_r, eos_t, "length_penalty")):
            if t_idx:
                r = on_device(r_idx, torch.long, logits.device)
                t = on_device(t_idx, torch.long, logits.device)
                theta = column(rows, name, logits).squeeze(1).index_select(0, r)
                out[r, t] = ctrl_penalty(out[r, t], theta)
        return out
