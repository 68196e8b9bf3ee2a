"""Look-back decoding (single-forward variant).

Xu, Zhou, Celikyilmaz & Ma, "Look-back Decoding for Open-Ended Text
Generation", EMNLP 2023 (arXiv:2305.13477).

Let p_t = softmax(logits_t) be the model's next-token distribution at the
current step (temperature 1: the detection signal is the model's own
distribution, and the top-k set below does not depend on T) and p_j the
distributions of earlier decoding steps j, followed by the token y_j the engine
sampled there. The paper's repetition signal is

    KL_min = min_j KL(p_t ‖ p_j),     KL(p ‖ q) = Σ_v p(v) ln(p(v) / q(v)).

If KL_min < α the current step looks like an earlier one, i.e. the model is about
to repeat what followed it. Then the next token is restricted to the top-k
tokens of p_t, minus the continuations of the matched steps:

    A = top_k(p_t) \\ {y_j : KL(p_t ‖ p_j) < α}     (if that is empty: A = top_k(p_t)).

Otherwise the logits pass through unchanged (the paper decodes greedily there;
use temperature 0 for that). Everything outside A is set to -inf; SGLang then
samples from the renormalised model probabilities inside A.

Deviations from the paper, all forced by one forward pass per step:

* The paper's coherence step (a one-step lookahead forward for each top-k
  candidate, keeping the candidates whose next-step distribution stays close to
  the prefix) is not implemented; the candidate set is the top-k minus the
  predicted repeats, sampled by model probability instead of uniformly.
* History covers only this request's own decoding steps, the last ``window`` of
  them; the paper also compares against the distributions at prefix positions.
* Each stored p_j is sparse: its top ``HISTORY_TOKENS`` (256) log-probabilities
  are kept exactly and the remaining mass r_j is spread uniformly over the other
  finite tokens, q_j(v) = r_j / (V_j - 256) (0 if all finite tokens are stored);
  log q_j is floored at ln(1e-30) so the KL stays finite. KL(p_t ‖ q_j) is then
  computed exactly against that q_j; with at most 256 finite tokens q_j = p_j.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from sglang_ilsi.methods.base import LogitsMethod, RowContext
from sglang_ilsi.params import Param
from sglang_ilsi.registry import register

HISTORY_TOKENS = 256
LOG_FLOOR = math.log(1e-30)


def sparse_history_entry(logp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sparse summary of the log-probability rows ``logp`` ``[n, vocab]``: the top
    token ids ``[n, S]``, their floored log-probs ``[n, S]`` and the floored log of
    the per-token residual probability ``[n]``."""
    s = min(HISTORY_TOKENS, logp.shape[-1])
    vals, idx = logp.topk(s, dim=-1)
    # log of the residual mass, summed directly (1 - Σ top would cancel in float32).
    log_rest_mass = torch.logsumexp(logp.scatter(-1, idx, float("-inf")), dim=-1)
    others = torch.isfinite(logp).sum(dim=-1) - s
    rest = (log_rest_mass - others.clamp(min=1).to(logp.dtype).log()).clamp(min=LOG_FLOOR)
    # Every finite token is stored: the rest has probability 0 (up to rounding).
    rest = torch.where(others > 0, rest, torch.full_like(rest, LOG_FLOOR))
    return idx, vals.clamp(min=LOG_FLOOR), rest


def kl_to_history(logp_t: torch.Tensor, idx: torch.Tensor, vals: torch.Tensor,
                  rest: torch.Tensor) -> torch.Tensor:
    """KL(p_t ‖ q_j) for every stored step j: ``logp_t`` ``[vocab]`` against the
    sparse history ``idx``/``vals`` ``[W, S]``, ``rest`` ``[W]``; returns ``[W]``."""
    p_t = logp_t.exp()
    neg_entropy = torch.xlogy(p_t, p_t).sum()
    p_on = p_t[idx]  # [W, S]
    p_off = (1.0 - p_on.sum(dim=-1)).clamp(min=0.0)
    cross = (p_on * vals).sum(dim=-1) + p_off * rest
    return neg_entropy - cross


@register
class LookBackDecoding(LogitsMethod):
    """When the distribution is KL-close to an earlier step, sample from the top-k minus the repeated continuation."""

    name = "look_back"
    family = "independent/contrastive"
    paper = ("Xu et al. 2023, Look-back Decoding for Open-Ended Text Generation (EMNLP), "
             "arXiv:2305.13477")
    argmax_invariant = False
    params = (
        Param("alpha", "float", 0.5,
              "α: KL threshold (nats); KL to an earlier step below α signals repetition",
              minimum=0.0, maximum=50.0),
        Param("top_k", "int", 8, "k: candidates kept when repetition is detected",
              minimum=1, maximum=1024),
        Param("window", "int", 128, "how many earlier decoding steps are compared against",
              minimum=1, maximum=1024),
    )

    @classmethod
    def apply(cls, logits: torch.Tensor, rows: Sequence[RowContext]) -> torch.Tensor:
        logp = torch.log_softmax(logits, dim=-1)
        h_idx, h_vals, h_rest = sparse_history_entry(logp)
        out = logits.clone()
        for i, row in enumerate(rows):
            st = row.state
            pos = len(row.output_ids)
            if st.get("pos") and st["pos"][-1] == pos:  # apply called twice for one step
                cls._drop_last(st)
            if st.get("pos"):
                kl = kl_to_history(logp[i], st["idx"], st["vals"], st["rest"])
                matched = (kl < float(row.params["alpha"])).nonzero().flatten().tolist()
                if matched:
                    cls._restrict(out, i, logits[i], row, [st["pos"][j] for j in matched])
            cls._push(st, pos, h_idx[i], h_vals[i], h_rest[i], int(row.params["window"]))
        return out

    @staticmethod
    def _restrict(out: torch.Tensor, i: int, row_logits: torch.Tensor, row: RowContext,
                  matched_pos: list[int]) -> None:
        k = min(int(row.params["top_k"]), int(torch.isfinite(row_logits).sum()))
        k = max(k, 1)
        cand = row_logits.topk(k).indices.tolist()
        repeats = {int(row.output_ids[p]) for p in matched_pos if p < len(row.output_ids)}
        kept = [t for t in cand if t not in repeats] or cand
        keep = torch.zeros_like(row_logits, dtype=torch.bool)
        keep[torch.tensor(kept, dtype=torch.long, device=row_logits.device)] = True
        out[i] = row_logits.masked_fill(~keep, float("-inf"))
        row.stats["look_back_triggers"] = row.stats.get("look_back_triggers", 0.0) + 1.0

    @staticmethod
    def _push(st: dict, pos: int, idx: torch.Tensor, vals: torch.Tensor, rest: torch.Tensor,
              window: int) -> None:
        if not st.get("pos"):
            st["pos"] = []
            st["idx"] = idx.new_empty((0, idx.shape[-1]))
            st["vals"] = vals.new_empty((0, vals.shape[-1]))
            st["rest"] = rest.new_empty((0,))
        st["pos"] = (st["pos"] + [pos])[-window:]
        st["idx"] = torch.cat([st["idx"], idx.unsqueeze(0)])[-window:]
        st["vals"] = torch.cat([st["vals"], vals.unsqueeze(0)])[-window:]
        st["rest"] = torch.cat([st["rest"], rest.unsqueeze(0)])[-window:]

    @staticmethod
    def _drop_last(st: dict) -> None:
        for key in ("pos", "idx", "vals", "rest"):
            st[key] = st[key][:-1]
