"""Unit tests of the logits-stage methods against plain reference implementations.

Each batched ``apply`` is compared with ``tests/method_references.py`` (one row at a
time, float64) on random logits with per-row parameters, grammar-style ``-inf``
masks and temperatures 0 (→ 1), 0.7 and 1.3. Stateful methods are simulated over
several steps with a growing token history and ``on_token`` calls.
"""

from __future__ import annotations

import math
import random
import re
import sys

import method_references as ref  # noqa: E402
import numpy as np
import pytest
import torch

from sglang_ilsi.declaration import FAMILIES
from sglang_ilsi.methods.base import RowContext
from sglang_ilsi.params import IlsiRequestError, validate_params
from sglang_ilsi.registry import get, logits_methods

TEMPS = (0.0, 0.7, 1.3)
NEG_INF = float("-inf")


# -- helpers ------------------------------------------------------------------------


def make_logits(seed: int, vocab: int, n_rows: int, mask_every: int = 2,
                mask_frac: float = 0.3) -> torch.Tensor:
    """Random float32 logits with row-dependent scale; every ``mask_every``-th row has
    a random fraction of entries masked to -inf (as a grammar would)."""
    g = torch.Generator().manual_seed(seed)
    scale = torch.linspace(1.0, 5.0, n_rows).unsqueeze(1)
    logits = torch.randn(n_rows, vocab, generator=g) * scale
    for i in range(0, n_rows, mask_every):
        masked = torch.rand(vocab, generator=g) < mask_frac
        logits[i, masked] = NEG_INF
    return logits


def make_rows(cls, given: list[dict], prompt_len: int = 3) -> list[RowContext]:
    return [
        RowContext(params=validate_params(cls.params, p), prompt_ids=list(range(1, prompt_len + 1)),
                   output_ids=[], temperature=TEMPS[i % len(TEMPS)], eos_token_ids=[0])
        for i, p in enumerate(given)
    ]


def assert_row_matches(out_row: torch.Tensor, ref_row: np.ndarray, label: str = "") -> None:
    out = out_row.detach().double().numpy()
    expected = np.asarray(ref_row, dtype=np.float64)
    assert out.shape == expected.shape
    assert not np.isnan(out).any(), f"{label}: NaN in output"
    assert not np.isposinf(out).any(), f"{label}: +inf in output"
    out_inf, ref_inf = np.isneginf(out), np.isneginf(expected)
    diff = np.nonzero(out_inf != ref_inf)[0]
    assert diff.size == 0, f"{label}: -inf sets differ at {diff[:10].tolist()}"
    np.testing.assert_allclose(out[~out_inf], expected[~ref_inf], atol=1e-5, rtol=0, err_msg=label)


# -- stateless truncation methods ---------------------------------------------------

STATELESS = {
    "typical": (
        lambda r: {"mass": r.choice([0.2, 0.5, 0.9, 0.99]), "min_tokens_to_keep": r.choice([1, 1, 3])},
        lambda row, t, p: ref.typical(row, t, p["mass"], p["min_tokens_to_keep"]),
    ),
    "epsilon": (
        lambda r: {"epsilon": r.choice([3e-4, 1e-3, 1e-2, 0.05])},
        lambda row, t, p: ref.epsilon(row, t, p["epsilon"]),
    ),
    "eta": (
        lambda r: {"epsilon": r.choice([3e-4, 2e-3, 1e-2, 0.1])},
        lambda row, t, p: ref.eta(row, t, p["epsilon"]),
    ),
    "top_n_sigma": (
        lambda r: {"n": r.choice([0.0, 0.5, 1.0, 2.0, 3.0])},
        lambda row, t, p: ref.top_n_sigma(row, t, p["n"]),
    ),
    "adaptive": (
        lambda r: {"epsilon": r.choice([1e-4, 1e-3, 5e-3, 2e-2])},
        lambda row, t, p: ref.adaptive(row, t, p["epsilon"]),
    ),
}
KEEPS_ARGMAX = {"epsilon", "eta", "top_n_sigma", "adaptive", "mirostat"}
VOCABS = (50, 137, 300, 500)


@pytest.mark.parametrize("name", sorted(STATELESS))
@pytest.mark.parametrize("seed", range(4))
def test_stateless_matches_reference(name: str, seed: int) -> None:
    cls = get(name)
    make_params, reference = STATELESS[name]
    rnd = random.Random(seed * 1000 + len(name))
    n_rows = 7
    rows = make_rows(cls, [make_params(rnd) for _ in range(n_rows)])
    logits = make_logits(seed, VOCABS[seed], n_rows)
    before = logits.clone()
    out = cls.apply(logits, rows)
    assert torch.equal(logits, before), "apply modified its input in place"
    assert out.shape == logits.shape and out.dtype == logits.dtype
    truncated = 0
    for i, row in enumerate(rows):
        expected = reference(logits[i].numpy(), row.temperature, row.params)
        assert_row_matches(out[i], expected, f"{name} seed={seed} row={i} {row.params}")
        kept = int(torch.isfinite(out[i]).sum())
        truncated += kept < int(torch.isfinite(logits[i]).sum())
        if name != "typical":  # the example method reports no stats
            assert row.stats["kept_tokens"] == kept
        if name in KEEPS_ARGMAX:
            assert torch.isfinite(out[i, logits[i].argmax()])
    assert truncated > 0, "the test data never triggers any truncation"


@pytest.mark.parametrize("name", sorted(KEEPS_ARGMAX - {"mirostat"}))
def test_argmax_kept_under_extreme_settings(name: str) -> None:
    cls = get(name)
    extreme = {"epsilon": {"epsilon": 0.99}, "eta": {"epsilon": 0.49}, "top_n_sigma": {"n": 0.0},
               "adaptive": {"epsilon": 0.99}}[name]
    rows = make_rows(cls, [extreme] * 3)
    logits = make_logits(7, 64, 3, mask_every=1, mask_frac=0.9)
    out = cls.apply(logits, rows)
    for i in range(3):
        assert torch.isfinite(out[i]).sum() >= 1
        assert torch.isfinite(out[i, logits[i].argmax()])


# -- mirostat -----------------------------------------------------------------------


def test_mirostat_steps_match_reference() -> None:
    cls = get("mirostat")
    specs = [{"tau": 3.0, "eta": 0.1}, {"tau": 1.0, "eta": 0.5}, {"tau": 6.0, "eta": 1.0},
             {"tau": 0.5, "eta": 0.2}, {}]
    rows = make_rows(cls, specs)
    mus = [2.0 * row.params["tau"] for row in rows]
    sampler = np.random.default_rng(0)
    for step in range(15):
        logits = make_logits(100 + step, 200, len(rows))
        out = cls.apply(logits, rows)
        for i, row in enumerate(rows):
            expected, log2q = ref.mirostat_step(logits[i].numpy(), row.temperature, mus[i])
            assert_row_matches(out[i], expected, f"mirostat step={step} row={i}")
            assert row.stats["mu"] == pytest.approx(mus[i], rel=1e-5, abs=1e-5)
            kept = np.nonzero(np.isfinite(expected))[0]
            q = np.exp2(log2q[kept])
            token = int(sampler.choice(kept, p=q / q.sum()))
            cls.on_token(row, token)
            mus[i] = ref.mirostat_update(mus[i], row.params["tau"], row.params["eta"], log2q, token)
            assert row.state["mu"] == pytest.approx(mus[i], rel=1e-5, abs=1e-5)
            assert row.stats["mu"] == row.state["mu"]
            row.output_ids.append(token)
    assert any(abs(mu - 2.0 * row.params["tau"]) > 0.1 for mu, row in zip(mus, rows, strict=True))


def test_mirostat_on_token_edge_cases() -> None:
    cls = get("mirostat")
    row = make_rows(cls, [{"tau": 2.0, "eta": 0.5}])[0]
    cls.on_token(row, 3)  # no apply yet: nothing to update
    assert "mu" not in row.state
    logits = torch.tensor([[5.0, 0.0, -5.0, NEG_INF]])
    out = cls.apply(logits, [row])
    assert torch.isinf(out[0, 3])
    cls.on_token(row, 3)  # a token outside the truncated set: μ unchanged
    assert row.state["mu"] == 4.0
    cls.apply(logits, [row])
    cls.on_token(row, 0)
    mu = row.state["mu"]
    assert mu != 4.0
    cls.on_token(row, 0)  # a second call for the same step does not update again
    assert row.state["mu"] == mu


# -- penalty decoding ---------------------------------------------------------------


def test_penalty_decoding_steps_match_reference() -> None:
    cls = get("penalty_decoding")
    specs = [
        {"penalty": 1.5, "window": 4, "length_penalty": 2.0, "min_length": 5},
        {"penalty": 3.0, "window": 1, "length_penalty": 1.0, "min_length": 0, "include_prompt": True},
        {"penalty": 1.2, "window": 8, "length_penalty": 5.0, "min_length": 100, "include_prompt": True},
        {"penalty": 10.0, "window": 64, "include_prompt": False},
        {},
    ]
    rows = make_rows(cls, specs, prompt_len=6)
    rows[1].prompt_ids = [4, 5, 6, 1000]  # an id outside the vocabulary is ignored
    rows[2].eos_token_ids = [0, 59]
    rnd = random.Random(3)
    for step in range(12):
        logits = make_logits(200 + step, 60, len(rows))
        logits[1, :5] = 0.0  # exact zeros: the CTRL transform leaves them unchanged
        before = logits.clone()
        out = cls.apply(logits, rows)
        assert torch.equal(logits, before)
        for i, row in enumerate(rows):
            p = row.params
            expected = ref.penalty_decoding(
                logits[i].numpy(), row.prompt_ids, row.output_ids, row.eos_token_ids, p["penalty"],
                p["window"], p["length_penalty"], p["min_length"], p["include_prompt"])
            assert_row_matches(out[i], expected, f"penalty step={step} row={i}")
            row.output_ids.append(rnd.randrange(1, 12))  # a small range: many repeats


# -- look-back ----------------------------------------------------------------------


@pytest.mark.parametrize("vocab", [100, 300])
def test_look_back_steps_match_reference(vocab: int) -> None:
    cls = get("look_back")
    specs = [{"alpha": 0.05, "top_k": 3, "window": 5}, {"alpha": 0.5, "top_k": 1, "window": 50},
             {"alpha": 0.2, "top_k": 8, "window": 2}, {"alpha": 0.0}, {}]
    rows = make_rows(cls, specs)
    refs = [ref.LookBack(r.params["alpha"], r.params["top_k"], r.params["window"]) for r in rows]
    g = torch.Generator().manual_seed(vocab)
    rnd = random.Random(vocab)
    history: list[list[torch.Tensor]] = [[] for _ in rows]
    for step in range(16):
        batch = []
        for i in range(len(rows)):
            if history[i] and rnd.random() < 0.5:  # revisit an earlier state: repetition
                base = rnd.choice(history[i])
                row_logits = base + 0.05 * torch.randn(vocab, generator=g)
            else:
                row_logits = 3.0 * torch.randn(vocab, generator=g)
            if i == 0:  # a grammar-style mask that changes every step
                row_logits = row_logits.masked_fill(torch.rand(vocab, generator=g) < 0.1, NEG_INF)
            history[i].append(row_logits)
            batch.append(row_logits)
        logits = torch.stack(batch)
        out = cls.apply(logits, rows)
        for i, row in enumerate(rows):
            expected = refs[i].step(logits[i].numpy(), row.output_ids)
            assert_row_matches(out[i], expected, f"look_back vocab={vocab} step={step} row={i}")
            assert row.state["pos"] == [pos for pos, _, _ in refs[i].history]
            assert row.stats.get("look_back_triggers", 0.0) == refs[i].triggers
            row.output_ids.append(int(out[i].argmax()))  # greedy, as in the paper
    triggers = [r.triggers for r in refs]
    assert sum(triggers) > 0 and triggers[3] == 0  # α = 0 never triggers


@pytest.mark.parametrize("vocab", [100, 1000])
def test_look_back_sparse_kl_matches_reference(vocab: int) -> None:
    from sglang_ilsi.methods.contrastive.look_back import kl_to_history, sparse_history_entry

    logits = make_logits(vocab, vocab, 6, mask_every=3, mask_frac=0.2)
    logits[1] = logits[0] + 0.1 * logits[1]  # one close neighbour
    logp = torch.log_softmax(logits, dim=-1)
    idx, vals, rest = sparse_history_entry(logp[1:])
    kl = kl_to_history(logp[0], idx, vals, rest)
    p0 = ref.probs(logits[0].numpy())
    for j in range(1, 6):
        top, rest_j = ref.LookBack._summary(ref.probs(logits[j].numpy()))
        assert float(rest[j - 1]) == pytest.approx(rest_j, rel=1e-4, abs=1e-4)
        assert float(kl[j - 1]) == pytest.approx(ref.LookBack.kl(p0, top, rest_j), rel=1e-4, abs=1e-4)


def test_look_back_apply_twice_per_step_is_idempotent() -> None:
    cls = get("look_back")
    row = make_rows(cls, [{"alpha": 10.0, "top_k": 2, "window": 4}])[0]
    logits = make_logits(5, 40, 1, mask_every=100)
    cls.apply(logits, [row])
    row.output_ids.append(int(logits[0].argmax()))
    first = cls.apply(logits, [row])
    second = cls.apply(logits, [row])
    assert torch.equal(first, second)
    assert row.state["pos"] == [0, 1]
    assert torch.isinf(first[0, logits[0].argmax()])  # the repeated continuation is removed
    assert int(torch.isfinite(first[0]).sum()) == 1


# -- keyword boost ------------------------------------------------------------------


class FakeTokenizer:
    """Splits text into 3-character chunks, each a token id from 10 upward."""

    def __init__(self, size: int = 200):
        self.size = size
        self.vocab: dict[str, int] = {}

    def __len__(self) -> int:
        return self.size

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        assert add_special_tokens is False
        chunks = [text[i:i + 3] for i in range(0, len(text), 3)]
        return [self.vocab.setdefault(c, 10 + len(self.vocab)) for c in chunks]


def test_keyword_boost_prepare() -> None:
    cls = get("keyword_boost")
    tok = FakeTokenizer()
    params = validate_params(cls.params, {"keywords": ["apple", "banana split"], "token_ids": [5]})
    prepared = cls.prepare(params, tok)
    flat = prepared["keyword_token_ids"]
    assert all(isinstance(t, int) for t in flat)
    assert flat.count(-1) == 1  # one separator between the two keywords
    assert prepared["token_ids"] == [5] and prepared["keywords"] == ["apple", "banana split"]
    spellings = [tok.encode(" apple", add_special_tokens=False), tok.encode("apple", add_special_tokens=False)]
    assert flat[: flat.index(-1)] == spellings[0] + [-2] + spellings[1]

    with pytest.raises(IlsiRequestError, match="keywords"):
        cls.prepare(validate_params(cls.params, {"keywords": ["ok", "  "]}), tok)
    with pytest.raises(IlsiRequestError, match="keywords"):
        cls.prepare(validate_params(cls.params, {"keywords": ["ok"]}), None)
    with pytest.raises(IlsiRequestError, match="token_ids"):
        cls.prepare(validate_params(cls.params, {"token_ids": [3, 250]}), tok)
    small = FakeTokenizer(size=12)
    with pytest.raises(IlsiRequestError, match="keywords"):
        cls.prepare(validate_params(cls.params, {"keywords": ["a long keyword"]}), small)
    # Without a tokenizer explicit ids still work (apply ignores out-of-range ones).
    assert cls.prepare(validate_params(cls.params, {"token_ids": [3]}), None)["keyword_token_ids"] == []


def test_keyword_boost_steps_match_reference() -> None:
    cls = get("keyword_boost")
    tok = FakeTokenizer()
    specs = [
        {"keywords": ["apple", "pear"], "strength": 2.0},
        {"keywords": ["apple", "kiwi fruit"], "strength": -3.5, "until_present": True},
        {"token_ids": [7, 190, 8], "strength": 4.0, "until_present": True},
        {"keywords": ["pear"], "token_ids": [9], "strength": 1.0, "until_present": True},
        {},
    ]
    rows = [RowContext(params=cls.prepare(validate_params(cls.params, s), tok), prompt_ids=[1],
                       output_ids=[], temperature=TEMPS[i % 3]) for i, s in enumerate(specs)]
    spell = {kw: [tok.encode(" " + kw, add_special_tokens=False), tok.encode(kw, add_special_tokens=False)]
             for kw in ("apple", "pear", "kiwi fruit")}
    # Token schedules: keywords appear (with either spelling) part-way through.
    schedule = [
        [1, 2, 3] + spell["apple"][0] + [4, 5, 6, 7],
        [1] + spell["apple"][1] + spell["kiwi fruit"][0][:1] + spell["kiwi fruit"][0] + [5],
        [1, 2, 8, 3, 4, 7, 5, 6, 9],
        [1, 9, 2] + spell["pear"][1][:1] + [3, 4, 5, 6, 7],
        [1, 2, 3, 4, 5, 6, 7, 8, 9],
    ]
    vocab = 150  # narrower than the tokenizer: id 190 must be ignored safely
    for step in range(9):
        logits = make_logits(300 + step, vocab, len(rows))
        before = logits.clone()
        out = cls.apply(logits, rows)
        assert torch.equal(logits, before)
        for i, row in enumerate(rows):
            p = row.params
            expected = ref.keyword_boost(logits[i].numpy(), row.output_ids,
                                         [spell[k] for k in p["keywords"]], p["token_ids"],
                                         p["strength"], p["until_present"])
            assert_row_matches(out[i], expected, f"keyword_boost step={step} row={i}")
            row.output_ids.append(schedule[i][step])
    assert rows[1].stats["keywords_pending"] == 0.0  # both keywords appeared
    assert rows[2].stats["keywords_pending"] == 1.0  # 190 never appears


# -- large vocabularies: the fast paths and their fallbacks --------------------------
#
# At real vocabulary sizes the methods avoid full-vocabulary sorts and fall back to
# the plain computation for rows where a shortcut cannot decide. These tests use a
# 20000-token vocabulary with rows from peaked to flat, grammar-style masks and
# temperatures 0/0.7/1.3, check every row against the references, and check that
# both the shortcuts and their fallbacks actually ran.

LARGE_VOCAB = 20_000


def large_logits(seed: int, n_rows: int, vocab: int = LARGE_VOCAB) -> torch.Tensor:
    """Zipf-like rows, logit = -a·ln(rank) + noise in a random token order, with slopes a
    from 3 (peaked) down to 0.05 (nearly flat); every third row (from the second) has 40%
    of its entries masked, and the row before the last 99.95% (a handful of tokens left)."""
    g = torch.Generator().manual_seed(seed)
    log_rank = torch.log(torch.arange(1, vocab + 1, dtype=torch.float32))
    rows = []
    for i, slope in enumerate(torch.linspace(3.0, 0.05, n_rows).tolist()):
        z = -slope * log_rank + 0.3 * torch.randn(vocab, generator=g)
        z = z[torch.randperm(vocab, generator=g)]
        if i % 3 == 1 or i == n_rows - 2:
            frac = 0.9995 if i == n_rows - 2 else 0.4
            masked = torch.rand(vocab, generator=g) < frac
            masked[int(torch.randint(vocab, (1,), generator=g))] = False
            z = z.masked_fill(masked, NEG_INF)
        rows.append(z)
    return torch.stack(rows)


def spy(monkeypatch, cls, name: str, record) -> None:
    """Wrap the classmethod ``cls.name`` so that each call is passed to ``record``."""
    original = getattr(cls, name)

    def wrapper(_cls, *args):
        result = original(*args)
        record(args, result)
        return result

    monkeypatch.setattr(cls, name, classmethod(wrapper))


TYPICAL_LARGE = [(0.9, 1), (0.95, 1), (0.5, 3), (0.99, 1), (0.9, 1024), (1.0, 1), (0.2, 1),
                 (0.95, 100), (0.8, 1), (0.95, 1), (0.7, 1), (0.9, 1)]


@pytest.mark.parametrize("seed", range(2))
def test_typical_large_vocab_prefilter_and_fallback(seed: int, monkeypatch) -> None:
    from sglang_ilsi.methods.sampling import typical as module

    cls = get("typical")
    rows = make_rows(cls, [{"mass": m, "min_tokens_to_keep": k} for m, k in TYPICAL_LARGE])
    logits = large_logits(seed, len(rows))
    decided: dict[int, int] = {}  # prefilter size -> rows it decided
    ranked: list[int] = []
    spy(monkeypatch, cls, "_prefiltered",
        lambda a, res: decided.__setitem__(a[-2], len(a[-3]) - len(res[0])))
    spy(monkeypatch, cls, "_ranked", lambda a, _: ranked.extend(a[-1].tolist()))
    out = cls.apply(logits, rows)
    for i, row in enumerate(rows):
        expected = ref.typical(logits[i].numpy(), row.temperature, row.params["mass"],
                               row.params["min_tokens_to_keep"])
        assert_row_matches(out[i], expected, f"typical large seed={seed} row={i} {row.params}")
    assert decided.get(512, 0) > 0 and ranked, (decided, ranked)
    assert 5 in ranked  # τ = 1: only the full ranking can decide
    # The shortcut gives exactly the full ranking's result.
    monkeypatch.setattr(module, "PREFILTER", ())
    assert torch.equal(cls.apply(logits, rows), out)


def test_typical_second_prefilter_and_tied_logits(monkeypatch) -> None:
    from sglang_ilsi.methods.sampling import typical as module

    cls = get("typical")
    # Medium entropy: too many typical tokens for 512 candidates, few enough for 4096.
    rows = make_rows(cls, [{"mass": 0.9}] * 3)
    logits = large_logits(5, 3)[:1].repeat(3, 1) * torch.tensor([[0.45], [0.5], [0.55]])
    logits[1] = logits[1].round()  # many exact ties: ranked by token id
    decided: dict[int, int] = {}
    spy(monkeypatch, cls, "_prefiltered",
        lambda a, res: decided.__setitem__(a[-2], len(a[-3]) - len(res[0])))
    out = cls.apply(logits, rows)
    assert decided.get(4096, 0) > 0, decided
    for i, row in enumerate(rows):
        expected = ref.typical(logits[i].numpy(), row.temperature, 0.9, 1)
        assert_row_matches(out[i], expected, f"typical medium row={i}")
    monkeypatch.setattr(module, "PREFILTER", ())
    assert torch.equal(cls.apply(logits, rows), out)


ADAPTIVE_LARGE = [1e-3, 1e-4, 5e-3, 2e-2, 1e-3, 0.3, 1e-3, 2e-3, 1e-4, 1e-3, 1e-3, 5e-4]


@pytest.mark.parametrize("seed", range(2))
def test_adaptive_large_vocab_candidates_and_fallback(seed: int, monkeypatch) -> None:
    from sglang_ilsi.methods.contrastive import adaptive as module

    cls = get("adaptive")
    rows = make_rows(cls, [{"epsilon": e} for e in ADAPTIVE_LARGE])
    logits = large_logits(seed, len(rows))
    redone: list[int] = []
    spy(monkeypatch, cls, "_ranked", lambda a, _: redone.extend(a[-2]))
    out = cls.apply(logits, rows)
    for i, row in enumerate(rows):
        expected = ref.adaptive(logits[i].numpy(), row.temperature, row.params["epsilon"])
        assert_row_matches(out[i], expected, f"adaptive large seed={seed} row={i} {row.params}")
        assert row.stats["kept_tokens"] == int(torch.isfinite(out[i]).sum())
    # ε above every p (rows 5 and the flat 11): no candidate to start from.
    assert 5 in redone and len(redone) < len(rows) // 2, redone
    monkeypatch.setattr(module, "CANDIDATES", False)
    assert torch.equal(cls.apply(logits, make_rows(cls, [{"epsilon": e} for e in ADAPTIVE_LARGE])),
                       out)


def test_adaptive_run_past_the_candidates_falls_back(monkeypatch) -> None:
    """Four finite tokens: all candidates pass and the fourth (p < ε) could still pass
    on the 2u/ln V bound, so the row is ranked in full."""
    cls = get("adaptive")
    logits = torch.full((2, LARGE_VOCAB), NEG_INF)
    logits[:, [17, 4000, 12345, 19999]] = torch.tensor([2.27, 1.54, 0.58, -2.77])
    rows = make_rows(cls, [{"epsilon": 0.005}, {"epsilon": 0.005}])
    rows[0].temperature = rows[1].temperature = 1.0
    redone: list[int] = []
    spy(monkeypatch, cls, "_ranked", lambda a, _: redone.extend(a[-2]))
    out = cls.apply(logits, rows)
    assert redone == [0, 1]
    for i in range(2):
        assert_row_matches(out[i], ref.adaptive(logits[i].numpy(), 1.0, 0.005), f"row {i}")


def test_adaptive_many_candidates_matches_full_ranking(monkeypatch) -> None:
    from sglang_ilsi.methods.contrastive import adaptive as module

    cls = get("adaptive")
    specs = [{"epsilon": 1e-6}, {"epsilon": 1e-5}, {"epsilon": 3e-5}] * 2
    logits = large_logits(9, len(specs)) * 0.5
    logits[3:] = logits[3:].round()  # ties: equal probabilities ranked by token id
    out = cls.apply(logits, make_rows(cls, specs))
    monkeypatch.setattr(module, "CANDIDATES", False)
    assert torch.equal(cls.apply(logits, make_rows(cls, specs)), out)
    assert int(torch.isfinite(out).sum(dim=-1).max()) > 20


THRESHOLD_LARGE = {
    "epsilon": ([3e-4, 1e-3, 1e-5, 0.05, 0.9], lambda row, t, e: ref.epsilon(row, t, e)),
    "eta": ([3e-4, 2e-3, 1e-5, 0.1, 0.49], lambda row, t, e: ref.eta(row, t, e)),
    "top_n_sigma": ([0.0, 0.5, 1.0, 3.0, 10.0], lambda row, t, n: ref.top_n_sigma(row, t, n)),
}


@pytest.mark.parametrize("name", sorted(THRESHOLD_LARGE))
def test_threshold_methods_large_vocab(name: str) -> None:
    cls = get(name)
    values, reference = THRESHOLD_LARGE[name]
    key = "n" if name == "top_n_sigma" else "epsilon"
    n_rows = 12
    rows = make_rows(cls, [{key: values[i % len(values)]} for i in range(n_rows)])
    logits = large_logits(21, n_rows)
    out = cls.apply(logits, rows)
    for i, row in enumerate(rows):
        expected = reference(logits[i].numpy(), row.temperature, row.params[key])
        assert_row_matches(out[i], expected, f"{name} large row={i} {row.params}")
        assert row.stats["kept_tokens"] == int(torch.isfinite(out[i]).sum())
        assert torch.isfinite(out[i, logits[i].argmax()])


@pytest.mark.parametrize("tol", [0.0, 1e-5, 10.0])
def test_eta_entropy_band_and_exact_fallback(tol: float, monkeypatch) -> None:
    """η is computed from a fast entropy; rows whose kept set could depend on the
    entropy's last bits are checked (band) and, if needed, redone with entr."""
    from sglang_ilsi.methods.sampling import eta as module

    cls = get("eta")
    monkeypatch.setattr(module, "_H_TOL", tol)
    entr_rows: list[int] = []
    original = torch.special.entr
    monkeypatch.setattr(torch.special, "entr",
                        lambda x: entr_rows.append(x.shape[0]) or original(x))
    n_rows = 9
    rows = make_rows(cls, [{"epsilon": e} for e in [3e-4, 1e-3, 0.01] * 3])
    logits = large_logits(33, n_rows)
    out = cls.apply(logits, rows)
    for i, row in enumerate(rows):
        expected = ref.eta(logits[i].numpy(), row.temperature, row.params["epsilon"])
        assert_row_matches(out[i], expected, f"eta tol={tol} row={i}")
        assert row.stats["kept_tokens"] == int(torch.isfinite(out[i]).sum())
    assert bool(entr_rows) == (tol == 10.0), entr_rows


@pytest.mark.parametrize("taus", [(3.0, 1.0, 0.5, 2.0), (3.0, 15.0, 6.0, 20.0)])
def test_mirostat_large_vocab_steps(taus: tuple[float, ...]) -> None:
    """Small τ: the kept entries are indexed; large τ (huge μ): the dense path."""
    cls = get("mirostat")
    rows = make_rows(cls, [{"tau": t, "eta": 0.5} for t in taus])
    mus = [2.0 * t for t in taus]
    sampler = np.random.default_rng(1)
    for step in range(4):
        logits = large_logits(40 + step, len(rows))
        out = cls.apply(logits, rows)
        for i, row in enumerate(rows):
            expected, log2q = ref.mirostat_step(logits[i].numpy(), row.temperature, mus[i])
            assert_row_matches(out[i], expected, f"mirostat large step={step} row={i}")
            kept = np.nonzero(np.isfinite(expected))[0]
            q = np.exp2(log2q[kept])
            token = int(sampler.choice(kept, p=q / q.sum()))
            cls.on_token(row, token)
            mus[i] = ref.mirostat_update(mus[i], row.params["tau"], row.params["eta"], log2q, token)
            assert row.state["mu"] == pytest.approx(mus[i], rel=1e-5, abs=1e-5)
            row.output_ids.append(token)


@pytest.mark.parametrize("tol", [1e-5, 100.0])
def test_look_back_large_vocab_matches_reference(tol: float, monkeypatch) -> None:
    """Vocabulary above the 256 stored tokens; a huge band forces the exact KL."""
    from sglang_ilsi.methods.contrastive import look_back as module

    monkeypatch.setattr(module, "_KL_TOL", tol)
    exact_calls: list[int] = []
    original = module.kl_to_history
    monkeypatch.setattr(module, "kl_to_history",
                        lambda *a: exact_calls.append(1) or original(*a))
    cls = get("look_back")
    vocab = 3000
    specs = [{"alpha": 0.05, "top_k": 3, "window": 3}, {"alpha": 0.5, "top_k": 50, "window": 50},
             {"alpha": 0.2, "top_k": 8, "window": 2}, {"alpha": 1.0, "top_k": 1, "window": 4}]
    rows = make_rows(cls, specs)
    refs = [ref.LookBack(r.params["alpha"], r.params["top_k"], r.params["window"]) for r in rows]
    g = torch.Generator().manual_seed(5)
    rnd = random.Random(5)
    history: list[list[torch.Tensor]] = [[] for _ in rows]
    for step in range(7):
        batch = []
        for i in range(len(rows)):
            if history[i] and rnd.random() < 0.6:
                row_logits = rnd.choice(history[i]) + 0.05 * torch.randn(vocab, generator=g)
            else:
                row_logits = 2.0 * torch.randn(vocab, generator=g)
            if i == 0:
                row_logits = row_logits.masked_fill(torch.rand(vocab, generator=g) < 0.3, NEG_INF)
            history[i].append(row_logits)
            batch.append(row_logits)
        logits = torch.stack(batch)
        out = cls.apply(logits, rows)
        for i, row in enumerate(rows):
            expected = refs[i].step(logits[i].numpy(), row.output_ids)
            assert_row_matches(out[i], expected, f"look_back tol={tol} step={step} row={i}")
            assert row.state["pos"] == [pos for pos, _, _ in refs[i].history]
            assert row.stats.get("look_back_triggers", 0.0) == refs[i].triggers
            row.output_ids.append(int(out[i].argmax()))
    assert sum(r.triggers for r in refs) > 0
    assert bool(exact_calls) == (tol == 100.0)


def test_penalty_and_keyword_boost_large_vocab() -> None:
    vocab = LARGE_VOCAB
    logits = large_logits(3, 4)
    logits[:, -3:] = torch.tensor([0.0, 2.5, -1.5])  # the last ids: zero, positive, negative
    cls = get("penalty_decoding")
    rows = make_rows(cls, [{"penalty": 2.0, "window": 300, "min_length": 10},
                           {"penalty": 1.3, "window": 5, "include_prompt": True},
                           {"penalty": 4.0, "window": 4096, "length_penalty": 3.0},
                           {"penalty": 1.5, "window": 1}], prompt_len=0)
    rnd = random.Random(8)
    for row in rows:
        row.prompt_ids = [vocab - 1, vocab + 5, 17]
        row.output_ids = [rnd.choice([vocab - 3, vocab - 2, vocab - 1, rnd.randrange(vocab)])
                          for _ in range(400)]
        row.eos_token_ids = [vocab - 2, 0]
    out = cls.apply(logits, rows)
    for i, row in enumerate(rows):
        p = row.params
        expected = ref.penalty_decoding(logits[i].numpy(), row.prompt_ids, row.output_ids,
                                        row.eos_token_ids, p["penalty"], p["window"],
                                        p["length_penalty"], p["min_length"], p["include_prompt"])
        assert_row_matches(out[i], expected, f"penalty large row={i}")
    cls = get("keyword_boost")
    ids = [vocab - 1, vocab - 2, 5, 5, vocab + 3]
    rows = [RowContext(params=cls.prepare(validate_params(cls.params, {"token_ids": ids,
                                                                       "strength": s}), None),
                       prompt_ids=[], output_ids=[], temperature=1.0) for s in (2.0, -3.0, 0.5, 0.0)]
    out = cls.apply(logits, rows)
    for i, row in enumerate(rows):
        expected = ref.keyword_boost(logits[i].numpy(), [], [], ids, row.params["strength"], False)
        assert_row_matches(out[i], expected, f"keyword_boost large row={i}")


def test_common_fast_primitives() -> None:
    """The helpers the fast paths are built from agree with the plain torch ops."""
    from sglang_ilsi.methods import common

    g = torch.Generator().manual_seed(4)
    x = (torch.randn(6, 12000, generator=g) * 3).round()  # many ties; 72000 ≥ SMALL entries
    x[0, :50] = NEG_INF
    x[1, 7], x[1, 8], x[2, 9] = -0.0, 0.0, float("inf")
    ids = torch.arange(12000).expand_as(x)
    for descending in (False, True):
        order = common.key_ids(common.sort_rows(common.order_keys(x, ids, descending)))
        stable = x.sort(dim=-1, descending=descending, stable=True).indices
        assert torch.equal(order, stable)  # (value, token id) order, like a stable sort
        for r in range(2):
            expected = sorted(range(12000), key=lambda i, r=r: (
                -float(x[r, i]) if descending else float(x[r, i]), i))
            assert order[r].tolist() == expected
    x = x[:, :3000]
    top = common.top_indices(x, 100)
    assert torch.equal(x.gather(-1, top).sort(dim=-1).values,
                       x.topk(100, dim=-1).values.sort(dim=-1).values)
    for frac in (0.01, 0.6):
        keep = torch.rand(x.shape, generator=g) < frac
        counts = common.count_true(keep)
        assert torch.equal(counts.long(), keep.sum(dim=-1))
        assert torch.equal(common.count_true(keep[:, :13]).long(), keep[:, :13].sum(dim=-1))
        assert torch.equal(common.select(keep, x, counts.tolist()),
                           torch.where(keep, x, NEG_INF))
    lp = torch.log_softmax(torch.randn(4, 1000, generator=g) * 30, dim=-1)
    lp[0, :10] = NEG_INF
    e = common.exp_normal(lp)
    big = lp > -87.0
    assert torch.equal(e[big], lp.exp()[big]) and bool((e[~big] == 0).all())
    big = torch.empty(4, LARGE_VOCAB)
    a = common.scratch("test", big, torch.bool)
    assert a.shape == big.shape and a.dtype == torch.bool
    assert common.scratch("test", big, torch.bool).data_ptr() == a.data_ptr()  # reused
    assert common.count_true(torch.ones(4, LARGE_VOCAB, dtype=torch.bool)).tolist() == [
        LARGE_VOCAB] * 4


# -- parameters and catalog ---------------------------------------------------------

BAD_PARAMS = [
    ("typical", "mass", 0.0), ("typical", "mass", 1.5), ("typical", "min_tokens_to_keep", 0),
    ("typical", "mass", "x"),
    ("epsilon", "epsilon", 0.0), ("epsilon", "epsilon", 1.0), ("epsilon", "epsilon", True),
    ("eta", "epsilon", 0.5), ("eta", "epsilon", -1e-3), ("eta", "epsilon", None),
    ("mirostat", "tau", 0.0), ("mirostat", "tau", 25.0), ("mirostat", "eta", 0.0),
    ("mirostat", "eta", 1.5), ("mirostat", "tau", "3"),
    ("top_n_sigma", "n", -0.1), ("top_n_sigma", "n", 11.0), ("top_n_sigma", "n", float("nan")),
    ("penalty_decoding", "penalty", 0.5), ("penalty_decoding", "penalty", 11),
    ("penalty_decoding", "window", 0), ("penalty_decoding", "window", 5000),
    ("penalty_decoding", "window", 2.5), ("penalty_decoding", "length_penalty", 0.9),
    ("penalty_decoding", "min_length", -1), ("penalty_decoding", "include_prompt", 1),
    ("adaptive", "epsilon", 0.0), ("adaptive", "epsilon", 1.0), ("adaptive", "epsilon", [0.1]),
    ("look_back", "alpha", -0.1), ("look_back", "top_k", 0), ("look_back", "top_k", 2000),
    ("look_back", "window", 0), ("look_back", "window", 1025), ("look_back", "alpha", "big"),
    ("keyword_boost", "token_ids", [-1]), ("keyword_boost", "token_ids", "5"),
    ("keyword_boost", "token_ids", list(range(300))), ("keyword_boost", "keywords", ["a"] * 65),
    ("keyword_boost", "keywords", [3]), ("keyword_boost", "keywords", ["x" * 200]),
    ("keyword_boost", "strength", 25.0), ("keyword_boost", "until_present", "yes"),
]


@pytest.mark.parametrize(("method", "param", "value"), BAD_PARAMS)
def test_param_validation_rejects(method: str, param: str, value) -> None:
    cls = get(method)
    with pytest.raises(IlsiRequestError) as info:
        validate_params(cls.params, {param: value})
    assert param in str(info.value)


def test_unknown_param_rejected() -> None:
    for name, cls in logits_methods().items():
        with pytest.raises(IlsiRequestError, match="no_such_param"):
            validate_params(cls.params, {"no_such_param": 1})
        if name == "keyword_boost":  # the prepared key cannot be injected by a request
            with pytest.raises(IlsiRequestError, match="keyword_token_ids"):
                validate_params(cls.params, {"keyword_token_ids": [1]})


EXPECTED = {"typical", "eta", "epsilon", "mirostat", "top_n_sigma", "penalty_decoding", "adaptive",
            "look_back", "keyword_boost"}


def test_catalog_cards() -> None:
    methods = logits_methods()
    assert EXPECTED <= set(methods)
    for name, cls in methods.items():
        assert cls.name == name
        assert cls.family in FAMILIES
        assert re.search(r"(19|20)\d\d", cls.paper), f"{name}: paper lacks a year"
        summary = cls.summary()
        assert summary and summary != name and len(summary) < 120, name
        module_doc = sys.modules[cls.__module__].__doc__ or ""
        assert re.search(r"(19|20)\d\d", module_doc), f"{name}: module docstring cites no paper"
        assert re.search(r"[=≤≥<>]", module_doc), f"{name}: module docstring has no formula"
        for p in cls.params:
            assert p.doc, f"{name}.{p.name} has no doc"
            assert p.validate(p.default) == p.default
        defaults = validate_params(cls.params, {p.name: p.default for p in cls.params})
        assert defaults == validate_params(cls.params, {})


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_defaults_smoke(name: str) -> None:
    cls = get(name)
    params = cls.prepare(validate_params(cls.params, {}), FakeTokenizer())
    rows = [RowContext(params=dict(params), prompt_ids=[1, 2], output_ids=[3, 4, 3],
                       temperature=t, eos_token_ids=[0]) for t in TEMPS]
    logits = make_logits(11, 80, len(rows))
    before = logits.clone()
    for step in range(3):
        out = cls.apply(logits, rows)
        assert out.shape == logits.shape and out.dtype == logits.dtype
        assert torch.equal(logits, before)
        assert not torch.isnan(out).any() and not torch.isposinf(out).any()
        masked = torch.isneginf(logits)
        assert torch.isneginf(out[masked]).all(), "a grammar-masked entry came back"
        for i, row in enumerate(rows):
            assert torch.isfinite(out[i]).any()
            token = int(out[i].argmax())
            cls.on_token(row, token)
            row.output_ids.append(token)
        assert all(math.isfinite(v) for row in rows for v in row.stats.values()), step
