"""SLED: self logits evolution decoding.

Zhang, Juan, Rashtchian, Ferng, Jiang & Chen, "SLED: Self Logits Evolution
Decoding for Improving Factuality in Large Language Models", NeurIPS 2024
(arXiv:2411.02433).

SLED treats the final logits z_N as the end point of an optimisation that the
early layers' logits z_n approximate, estimates from them the "latent"
distribution P_lat the model knows, and takes one gradient step of
KL(P_lat ‖ softmax(z_N)) on the final logits. Our reading of the algorithm,
restricted (as in the paper) to the k most likely tokens T of the final layer:

    P_N = softmax(z_N),  g_n = z_N − z_n                            (n in the early layers)
    c_{n,i} = cos(g_n, P_N − e_i)                                   (i ∈ T; e_i the one-hot of i)
    m_{n,i} = max(c_{n,i}, 0)²
    P_lat(i) = Σ_n m_{n,i} / Σ_n Σ_{j∈T} m_{n,j}                    (i ∈ T)
    z̃_i = z_N,i − α · (P_N(i) − P_lat(i))                          (i ∈ T; the KL gradient step)

and every token outside T is set to −inf. The cosine has a closed form:
cos(g, P_N − e_i) = (g·P_N − g_i) / (‖g‖ · sqrt((1 − P_N(i))² + Σ_{j≠i} P_N(j)²)),
computed in float64.
``evolution_rate`` is α, ``evolution_scale`` is k. If no layer gives a positive
signal, the row keeps z_N on T.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from sglang_ilsi.methods.base import RowContext, layer_key
from sglang_ilsi.methods.contrastive.dola import LAYERS, EarlyLayerMethod
from sglang_ilsi.params import Param
from sglang_ilsi.registry import register


@register
class Sled(EarlyLayerMethod):
    """SLED: one KL step of the final logits toward the early layers' latent estimate."""

    name = "sled"
    family = "independent/contrastive"
    paper = "Zhang et al. 2024, SLED (arXiv:2411.02433)"
    params = (
        LAYERS,
        Param("evolution_rate", "float", 2.0, "step size α of the logits evolution",
              minimum=0.0, maximum=100.0),
        Param("evolution_scale", "int", 10, "number k of top tokens evolved",
              minimum=1, maximum=1000),
    )

    @classmethod
    def apply(cls, logits: torch.Tensor, rows: Sequence[RowContext]) -> torch.Tensor:
        out = torch.full_like(logits, float("-inf"))
        for i, row in enumerate(rows):
            # float64: ‖P_N − e_i‖ = sqrt((1 − P_N(i))² + Σ_{j≠i} P_N(j)²) cancels badly
            # in float32 when the top token holds almost all the mass
            final = logits[i].double()
            k = min(int(row.params["evolution_scale"]), int(torch.isfinite(final).sum()))
            top = final.topk(k).indices
            p_n = torch.softmax(final, dim=-1)
            early = torch.stack([row.inputs[layer_key(j)].to(logits.device, torch.float64)
                                 for j in row.params["layers"]])
            finite = torch.isfinite(final)
            g = torch.where(finite, final, 0.0) - torch.where(finite, early, 0.0)  # [n, V]
            g_dot_p = (g * p_n).sum(-1, keepdim=True)                             # [n, 1]
            g_norm = g.norm(dim=-1, keepdim=True).clamp_min(1e-300)
            p_top = p_n[top]
            e_norm = ((1 - p_top).square() + (p_n.square().sum() - p_top.square())
                      .clamp_min(0)).sqrt().clamp_min(1e-300)
            cos = (g_dot_p - g[:, top]) / (g_norm * e_norm)                       # [n, k]
            m = cos.clamp_min(0).square()
            total = m.sum()
            evolved = final[top].clone()
            if total > 0:
                p_lat = m.sum(0) / total
                evolved -= float(row.params["evolution_rate"]) * (p_top - p_lat)
            out[i, top] = evolved.to(out.dtype)
        return out
