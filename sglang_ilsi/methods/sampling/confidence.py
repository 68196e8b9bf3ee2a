"""Token confidence and self-certainty, measured while decoding; optional early stop.

The measure behind DeepConf (Fu, Wang, Tian & Zhao 2025, "Deep Think with
Confidence", arXiv:2508.15260) and self-certainty (Kang, Zhao & Song 2025,
"Scalable Best-of-N Selection for Large Language Models via Self-Certainty",
arXiv:2502.18581). Both read the model's own next-token distribution
p_i = softmax(z_i) (raw logits, before temperature or any later method) at
each generated position i; this method sees it in the logits stage, so it
must come first in a chain.

    token confidence   C_i  = −(1/k) Σ_{j=1..k} log p_i(j)      (the k most probable tokens)
    group confidence   C_G(t) = (1/w) Σ_{i=t−w+1..t} C_i        (complete windows, t ≥ w)
    lowest group       min_t C_G(t);  the mean of all C_i if the trace is shorter than w
    tail confidence    the mean of the last min(w, n) C_i
    self-certainty     SC_i = KL(U ‖ p_i) = −log V − (1/V) Σ_v log p_i(v);  reported as the mean

High values mean a peaked (confident) distribution. With ``stop_below`` = s > 0
the trace is stopped (DeepConf online) at the first position t ≥ w where
C_G(t) < s: that step's logits become end-of-sequence only, so the request
ends there and its decoding slot is freed at once (``stats.stopped = 1``,
``stats.stopped_at`` = the number of tokens, the forced end included).

Tokens a grammar masked (−inf) are left out of both means (V and k count
finite entries only). The step SGLang's overlap scheduler runs after a
request's last token is not measured (:func:`~sglang_ilsi.methods.base.finished`).
Stats (the response's ``ilsi.stats``): ``tokens``, ``mean_confidence``,
``lowest_group_confidence``, ``tail_confidence``, ``self_certainty``,
``stopped`` (and ``stopped_at``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any

import torch

from sglang_ilsi.methods.base import LogitsMethod, RowContext, finished, on_device
from sglang_ilsi.params import Param
from sglang_ilsi.registry import register

NEG_INF = float("-inf")
MAX_TOP_K = 100


@register
class Confidence(LogitsMethod):
    """Measure each trace's token confidence and self-certainty; stop it when its
    group confidence falls below a threshold."""

    name = "confidence"
    family = "independent/sampling"
    paper = ("Fu et al. 2025, Deep Think with Confidence, arXiv:2508.15260; Kang et al. 2025, "
             "Scalable Best-of-N Selection for Large Language Models via Self-Certainty, "
             "arXiv:2502.18581")
    params = (
        Param("top_k", "int", 20, "k: token confidence averages the k most probable tokens' "
              "log-probabilities", minimum=1, maximum=MAX_TOP_K),
        Param("window", "int", 16, "w: the group confidence's sliding window, in tokens",
              minimum=1, maximum=4096),
        Param("stop_below", "float", 0.0, "s: stop the trace at the first complete window "
              "whose group confidence is below s (0: never stop)", minimum=0.0),
    )

    @classmethod
    def ends_sequences(cls, params: dict[str, Any]) -> bool:
        return float(params["stop_below"]) > 0

    @classmethod
    def apply(cls, logits: torch.Tensor, rows: Sequence[RowContext]) -> torch.Tensor:
        live = [k for k, row in enumerate(rows) if not finished(row)]
        if not live:
            return logits
        picked = logits if len(live) == len(rows) else logits[live]
        logp = torch.log_softmax(picked.float(), dim=-1)
        confidence = token_confidence(logp, [int(rows[k].params["top_k"]) for k in live])
        certainty = self_certainty(logp)
        measured = torch.stack([confidence, certainty], dim=1).tolist()  # one host read
        for (c, sc), k in zip(measured, live, strict=True):
            row = rows[k]
            if _observe(row, c, sc):
                stop = row.eos_token_ids[0]
                logits[k].fill_(NEG_INF)
                logits[k, stop] = 0.0
        return logits


def token_confidence(logp: torch.Tensor, top_k: Sequence[int]) -> torch.Tensor:
    """C = −mean of each row's k most probable log-probabilities (finite ones only)."""
    widest = min(max(top_k), logp.shape[-1])
    top = logp.topk(widest, dim=-1).values
    limit = on_device(list(top_k), device=logp.device).unsqueeze(1)
    counted = torch.isfinite(top) & (torch.arange(widest, device=logp.device) < limit)
    total = torch.where(counted, top, torch.zeros_like(top)).sum(dim=-1, dtype=torch.float64)
    return -(total / counted.sum(dim=-1))


def self_certainty(logp: torch.Tensor) -> torch.Tensor:
    """KL(U ‖ p) per row over the finite entries: −log V − mean_v log p(v)."""
    finite = torch.isfinite(logp)
    count = finite.sum(dim=-1).to(torch.float64)
    total = torch.where(finite, logp, torch.zeros_like(logp)).sum(dim=-1, dtype=torch.float64)
    return -total / count - torch.log(count)


def _observe(row: RowContext, confidence: float, certainty: float) -> bool:
    """Add one step's measures to the row's running statistics; True when the
    trace must stop here."""
    state = row.state
    if not state:
        state.update(recent=deque(), recent_sum=0.0, count=0, confidence_sum=0.0,
                     certainty_sum=0.0, lowest=None)
    window = int(row.params["window"])
    recent: deque = state["recent"]
    recent.append(confidence)
    state["recent_sum"] += confidence
    if len(recent) > window:
        state["recent_sum"] -= recent.popleft()
    state["count"] += 1
    state["confidence_sum"] += confidence
    state["certainty_sum"] += certainty
    count = state["count"]
    group = state["recent_sum"] / len(recent)
    if len(recent) == window:
        state["lowest"] = group if state["lowest"] is None else min(state["lowest"], group)
    mean = state["confidence_sum"] / count
    row.stats.update(
        tokens=float(count),
        mean_confidence=mean,
        lowest_group_confidence=state["lowest"] if state["lowest"] is not None else mean,
        tail_confidence=group,
        self_certainty=state["certainty_sum"] / count,
        stopped=0.0,
    )
    threshold = float(row.params["stop_below"])
    if threshold > 0 and len(recent) == window and group < threshold and row.eos_token_ids:
        row.stats.update(stopped=1.0, stopped_at=float(count))
        return True
    return False
