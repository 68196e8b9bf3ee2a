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

Implementation: the history of a request lives in preallocated ring buffers, and
the entropy term of the KL, Σ p_t ln p_t, is computed for all rows at once from
the log-probabilities instead of row by row with ``xlogy`` (libm's log, ~6 ns
per entry on CPU). The two agree to about 2e-7 · (1 + H); a row whose KL to some
stored step lies within a much wider band around α is recomputed with
:func:`kl_to_history` as before, so the decisions are unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from sglang_ilsi.methods.base import LogitsMethod, RowContext, on_device
from sglang_ilsi.methods.common import count_true, exp_normal, scratch
from sglang_ilsi.params import Param
from sglang_ilsi.registry import register

HISTORY_TOKENS = 256
LOG_FLOOR = math.log(1e-30)
_KL_TOL = 1e-5  # relative band around α within which the KL is recomputed exactly


def sparse_history_entry(logp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sparse summary of the log-probability rows ``logp`` ``[n, vocab]``: the top
    token ids ``[n, S]``, their floored log-probs ``[n, S]`` and the floored log of
    the per-token residual probability ``[n]``."""
    return _history_entry(logp)[:3]


def _history_entry(logp: torch.Tensor):
    """:func:`sparse_history_entry` plus the number of finite entries of each row."""
    s = min(HISTORY_TOKENS, logp.shape[-1])
    vals, idx = logp.topk(s, dim=-1)
    # log of the residual mass, summed directly (1 - Σ top would cancel in float32).
    others_only = scratch("rest", logp).copy_(logp).scatter_(-1, idx, float("-inf"))
    log_rest_mass = torch.logsumexp(others_only, dim=-1)
    # log_softmax output holds no NaN or +inf: finite = not -inf (much cheaper than isfinite).
    masked = torch.isneginf(logp, out=scratch("mask", logp, torch.bool))
    finite = logp.shape[-1] - count_true(masked)
    others = finite - s
    rest = (log_rest_mass - others.clamp(min=1).to(logp.dtype).log()).clamp(min=LOG_FLOOR)
    # Every finite token is stored: the rest has probability 0 (up to rounding).
    rest = torch.where(others > 0, rest, torch.full_like(rest, LOG_FLOOR))
    return idx, vals.clamp(min=LOG_FLOOR), rest, finite


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
        logp = torch.log_softmax(logits, dim=-1, out=scratch("logp", logits))
        h_idx, h_vals, h_rest, finite = _history_entry(logp)
        p = exp_normal(logp, out=scratch("p", logits))  # = logp.exp() down to 1.7e-38
        prod = torch.mul(p, logp, out=scratch("s", logits)).nan_to_num_()
        neg_entropy = prod.sum(dim=-1)  # Σ p ln p, up to rounding
        # KL(p_t ‖ q_j) = Σ p ln p - cross_j with cross_j = Σ p ln q_j, as in kl_to_history;
        # the per-row work is one gather and two reductions, the rest is batched.
        positions = [len(row.output_ids) for row in rows]
        dots, masses, rests, owners, slot_lists = [], [], [], [], []
        for i, row in enumerate(rows):
            st = row.state
            if st.get("pos") and st["pos"][-1] == positions[i]:  # apply twice for one step
                cls._drop_last(st)
            if st.get("pos"):
                hi = st["hi"]
                on = p[i].index_select(0, st["idx"][:hi].view(-1)).view(hi, -1)
                dots.append(torch.linalg.vecdot(on, st["vals"][:hi]))
                masses.append(on.sum(dim=-1))
                rests.append(st["rest"][:hi])
                owners.append(i)
                slot_lists.append(st["slot_pos"][:hi])
        matched: dict[int, list[int]] = {}
        if owners:
            own = on_device(owners, device=logits.device)
            lengths = [len(sl) for sl in slot_lists]
            sizes = on_device(lengths, device=logits.device)
            total = sum(lengths)  # known here: repeat_interleave need not read sizes back
            own = own.repeat_interleave(sizes, output_size=total)
            off = (1.0 - torch.cat(masses)).clamp(min=0.0)
            cross = torch.cat(dots) + off * torch.cat(rests)
            kl = neg_entropy[own] - cross
            alpha = on_device([float(rows[i].params["alpha"]) for i in owners], kl.dtype,
                              kl.device).repeat_interleave(sizes, output_size=total)
            tol = _KL_TOL * (1.0 + neg_entropy[own].abs() + cross.abs()) + 1e-6
            flags = ((kl < alpha).to(torch.int8) + 2 * ((kl - alpha).abs() <= tol)).tolist()
            start = 0
            for i, slots in zip(owners, slot_lists, strict=True):
                f = flags[start:start + len(slots)]
                start += len(slots)
                if any(x >= 2 for x in f):  # a KL too close to α: recompute as before
                    st = rows[i].state
                    hi = st["hi"]
                    exact = kl_to_history(logp[i], st["idx"][:hi], st["vals"][:hi],
                                          st["rest"][:hi])
                    f = (exact < float(rows[i].params["alpha"])).tolist()
                hits = [pos for x, pos in zip(f, slots, strict=True)
                        if x % 2 and pos is not None]
                if hits:
                    matched[i] = sorted(hits)
        out = logits.clone()
        n_finite = finite.tolist() if matched else []
        for i, row in enumerate(rows):
            if i in matched:
                cls._restrict(out, i, logits[i], row, n_finite[i], matched[i])
            cls._push(row.state, positions[i], h_idx[i], h_vals[i], h_rest[i],
                      int(row.params["window"]))
        return out

    @staticmethod
    def _restrict(out: torch.Tensor, i: int, row_logits: torch.Tensor, row: RowContext,
                  finite: int, matched_pos: list[int]) -> None:
        k = max(min(int(row.params["top_k"]), finite), 1)
        cand = row_logits.topk(k).indices.tolist()
        repeats = {int(row.output_ids[p]) for p in matched_pos if p < len(row.output_ids)}
        kept = on_device([t for t in cand if t not in repeats] or cand, torch.long,
                         row_logits.device)
        out[i].fill_(float("-inf"))
        out[i, kept] = row_logits[kept]
        row.stats["look_back_triggers"] = row.stats.get("look_back_triggers", 0.0) + 1.0

    @staticmethod
    def _push(st: dict, pos: int, idx: torch.Tensor, vals: torch.Tensor, rest: torch.Tensor,
              window: int) -> None:
        """Store the summary of step ``pos``, dropping the oldest beyond ``window``.

        Entries live in ring buffers ``[window, S]``; ``st["slot_pos"][j]`` is the step
        stored in slot j (None if free), ``st["hi"]`` one past the highest slot in use
        and ``st["pos"]``/``st["slot"]`` the steps and their slots, oldest first."""
        if "slot_pos" not in st or st["idx"].shape[-1] != idx.shape[-1]:
            st["pos"], st["slot"], st["slot_pos"], st["hi"] = [], [], [None] * window, 0
            st["idx"] = idx.new_empty((window, idx.shape[-1]))
            st["vals"] = vals.new_empty((window, vals.shape[-1]))
            st["rest"] = rest.new_empty((window,))
        if len(st["pos"]) >= window:  # full: reuse the oldest entry's slot
            slot = st["slot"].pop(0)
            st["pos"].pop(0)
        else:
            slot = st["slot_pos"].index(None)
        st["idx"][slot] = idx
        st["vals"][slot] = vals
        st["rest"][slot] = rest
        st["pos"].append(pos)
        st["slot"].append(slot)
        st["slot_pos"][slot] = pos
        st["hi"] = max(st["hi"], slot + 1)

    @staticmethod
    def _drop_last(st: dict) -> None:
        st["pos"].pop()
        slot = st["slot"].pop()
        st["slot_pos"][slot] = None
