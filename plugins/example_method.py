"""An out-of-tree method: load it with ``--ilsi-plugin plugins/example_method.py``.

Entropy-based dynamic temperature (EDT): Zhang et al. 2024, "EDT: Improving
Large Language Models' Generation by Entropy-based Dynamic Temperature
Sampling" (arXiv:2403.14541). With H the entropy of softmax(logits) and N a
base, the step's temperature is ``T = T0 · N^(θ / H)``: confident steps (low
H) get a temperature near 0, uncertain steps one near T0. Since SGLang divides
by the request's own temperature afterwards, the method returns
``logits · T_req / T`` so that the effective temperature is T.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from sglang_ilsi.methods.base import LogitsMethod, RowContext, column
from sglang_ilsi.params import Param
from sglang_ilsi.registry import register


@register
class EntropyDynamicTemperature(LogitsMethod):
    """Temperature T0·N^(θ/H): sharper where the model is sure, T0 where it is not."""

    name = "edt"
    family = "independent/sampling"
    paper = "Zhang et al. 2024, EDT: Entropy-based Dynamic Temperature Sampling, arXiv:2403.14541"
    params = (
        Param("t0", "float", 1.0, "T0: temperature at maximal uncertainty", minimum=0.05, maximum=5.0),
        Param("theta", "float", 0.2, "θ: how fast the temperature falls as entropy drops",
              minimum=0.0, maximum=10.0),
        Param("base", "float", 0.8, "N: base of the power (0 < N < 1)", minimum=0.0, maximum=1.0,
              exclusive_minimum=True, exclusive_maximum=True),
    )

    @classmethod
    def apply(cls, logits: torch.Tensor, rows: Sequence[RowContext]) -> torch.Tensor:
        logp = torch.log_softmax(logits, dim=-1)
        entropy = (-(logp.exp() * logp)).nan_to_num().sum(dim=-1, keepdim=True).clamp_min(1e-6)
        t = column(rows, "t0", logits) * column(rows, "base", logits) ** (
            column(rows, "theta", logits) / entropy)
        request_t = torch.tensor([r.temperature if r.temperature > 1e-6 else 1.0 for r in rows],
                                 dtype=logits.dtype, device=logits.device).unsqueeze(1)
        for row, value in zip(rows, t.squeeze(1).tolist()):
            row.stats["last_temperature"] = round(value, 6)
        return logits * request_t / t.clamp_min(1e-4)
