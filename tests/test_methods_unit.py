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
from pathlib import Path

import numpy as np
import pytest
import torch

from sglang_ilsi.methods.base import FAMILIES, RowContext
from sglang_ilsi.params import IlsiRequestError, validate_params
from sglang_ilsi.registry import all_methods, get

sys.path.insert(0, str(Path(__file__).resolve().parent))
import method_references as ref  # noqa: E402

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
    for name, cls in all_methods().items():
        with pytest.raises(IlsiRequestError, match="no_such_param"):
            validate_params(cls.params, {"no_such_param": 1})
        if name == "keyword_boost":  # the prepared key cannot be injected by a request
            with pytest.raises(IlsiRequestError, match="keyword_token_ids"):
                validate_params(cls.params, {"keyword_token_ids": [1]})


EXPECTED = {"typical", "eta", "epsilon", "mirostat", "top_n_sigma", "penalty_decoding", "adaptive",
            "look_back", "keyword_boost"}


def test_catalog_cards() -> None:
    methods = all_methods()
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
