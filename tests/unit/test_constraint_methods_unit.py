"""Unit tests of the lexical and length constraint methods.

``lexical_constraints``, ``keyword_decay`` and ``length_target`` are compared
with the plain references in ``tests/method_references.py`` (one row at a time,
float64, brute-force phrase matching) on random logits, several rows with
different parameters and token histories per batch. Decoding loops with a small
deterministic tokenizer check the hard guarantees of ``lexical_constraints``:
with forcing every include phrase appears in every greedy and sampled run, no
exclude phrase ever appears, and EOS is blocked until the includes are there.
"""

from __future__ import annotations

import json
import math
import random
import re
import sys

import method_references as ref  # noqa: E402
import numpy as np
import pytest
import torch

from sglang_ilsi.methods.base import RowContext
from sglang_ilsi.methods.constrained.lexical_constraints import Matcher
from sglang_ilsi.methods.constrained.phrases import decode_keywords, encode_keywords
from sglang_ilsi.params import IlsiRequestError, validate_params
from sglang_ilsi.registry import get

NEG_INF = float("-inf")
EOS = 0
VOCAB = 64


class WordTokenizer:
    """A tiny deterministic tokenizer: each word (with its leading spaces) is cut
    into ``chunk``-character pieces, and each distinct piece gets the next id
    from 10 upward (ids 0-9 are left for EOS and "other" tokens)."""

    def __init__(self, size: int = VOCAB, chunk: int = 3):
        self.size, self.chunk = size, chunk
        self.vocab: dict[str, int] = {}

    def __len__(self) -> int:
        return self.size

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        assert add_special_tokens is False
        ids = []
        for word in re.findall(r" *[^ ]+| +$", text):
            for i in range(0, len(word), self.chunk):
                ids.append(self.vocab.setdefault(word[i:i + self.chunk], 10 + len(self.vocab)))
        return ids

    def spellings(self, phrase: str) -> list[list[int]]:
        out: list[list[int]] = []
        for text in (" " + phrase, phrase):
            ids = self.encode(text, add_special_tokens=False)
            if ids not in out:
                out.append(ids)
        return out


def prepared(name: str, given: dict, tokenizer) -> dict:
    cls = get(name)
    return cls.prepare(validate_params(cls.params, given), tokenizer)


def occurs(seq, sub) -> bool:
    seq, sub = list(seq), list(sub)
    return any(seq[i:i + len(sub)] == sub for i in range(len(seq) - len(sub) + 1))


def assert_row_matches(out_row: torch.Tensor, ref_row: np.ndarray, label: str = "") -> None:
    out = out_row.detach().double().numpy()
    expected = np.asarray(ref_row, dtype=np.float64)
    assert out.shape == expected.shape
    assert not np.isnan(out).any() and not np.isposinf(out).any(), label
    out_inf, ref_inf = np.isneginf(out), np.isneginf(expected)
    diff = np.nonzero(out_inf != ref_inf)[0]
    assert diff.size == 0, f"{label}: -inf sets differ at {diff[:10].tolist()}"
    np.testing.assert_allclose(out[~out_inf], expected[~ref_inf], atol=1e-5, rtol=0, err_msg=label)


def random_logits(g: torch.Generator, n_rows: int, vocab: int = VOCAB,
                  masked_rows: tuple[int, ...] = ()) -> torch.Tensor:
    scale = torch.linspace(1.0, 4.0, n_rows).unsqueeze(1)
    logits = torch.randn(n_rows, vocab, generator=g) * scale
    for i in masked_rows:
        logits[i, torch.rand(vocab, generator=g) < 0.3] = NEG_INF
    return logits


# -- lexical_constraints: the KMP matcher ---------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_matcher_equals_brute_force(seed: int) -> None:
    rnd = random.Random(seed)
    for _ in range(40):
        spelling = [rnd.choice([0, 1, 2]) for _ in range(rnd.randint(1, 6))]
        m = Matcher(spelling)
        seq: list[int] = []
        for _ in range(60):
            seq.append(rnd.choice([0, 1, 2]) if rnd.random() < 0.8 else 3)
            hit = m.feed(seq[-1])
            assert hit == (seq[-len(spelling):] == spelling)
            longest = max((k for k in range(len(spelling))
                           if k == 0 or seq[-k:] == spelling[:k]), default=0)
            assert m.q == longest, (spelling, seq)


# -- lexical_constraints: equality with the reference -----------------------------------


def lexical_rows(tok: WordTokenizer):
    """Rows with different parameters and starting histories, each row's
    include/exclude spellings, and a reference decoder per row."""
    cls = get("lexical_constraints")
    specs = [
        {"include": ["blue whale", "red fox"], "exclude": ["red car", "ant"], "force_after": 0},
        {"include": ["blue whale", "red fox"], "exclude": ["green"], "force_after": 4,
         "boost": 1.5},
        {"exclude": ["green", "ant", "red car"]},
        {"include": ["red fox"], "force_after": 1000, "boost": 3.0},
        {"include": ["red fox", "ant hill"], "exclude": ["blue"], "force_after": 6, "boost": 0.5},
    ]
    rows, phrases = [], []
    for i, spec in enumerate(specs):
        params = cls.prepare(validate_params(cls.params, spec), tok)
        rows.append(RowContext(params=params, prompt_ids=[1, 2], output_ids=[],
                               temperature=(0.0, 0.7, 1.3)[i % 3], eos_token_ids=[EOS]))
        phrases.append(([tok.spellings(p) for p in spec.get("include", [])],
                        [tok.spellings(p) for p in spec.get("exclude", [])]))
    # Hand-made token phrases with self-overlap (prepare bypassed), small alphabet.
    manual = [
        ([[[5, 5, 6, 5, 5, 7]], [[5, 6], [6, 5]]], [[[5, 5, 5]], [[7, 7]]], 3, 0.0),
        ([[[5, 5, 6, 5, 5, 7]]], [[[6, 6]], [[8]]], 2, 1.0),
        # Include contains an excluded phrase: never satisfiable, EOS stays blocked.
        ([[[6, 7, 8]]], [[[7, 8]]], 0, 0.0),
    ]
    for inc, exc, force_after, boost in manual:
        params = validate_params(cls.params, {"force_after": force_after, "boost": boost})
        params["include_token_ids"] = encode_keywords(inc)
        params["exclude_token_ids"] = encode_keywords(exc)
        rows.append(RowContext(params=params, prompt_ids=[1], output_ids=[], temperature=1.0,
                               eos_token_ids=[EOS, 9]))
        phrases.append((inc, exc))
    # Resumed requests: some rows start with a history.
    rows[1].output_ids.extend(tok.spellings("blue whale")[0][:1] + [3, 4])
    rows[6].output_ids.extend([5, 5, 6])
    refs = [ref.LexicalConstraints(inc, exc, row.eos_token_ids, row.params["force_after"],
                                   row.params["boost"]) for row, (inc, exc) in zip(rows, phrases)]
    return rows, phrases, refs


def next_token(rnd: random.Random, out_row: torch.Tensor, inc, exc, history) -> int:
    """A mix of the method's own choice, phrase tokens and noise, so that phrases
    start, continue, break off, complete and overlap."""
    r = rnd.random()
    if r < 0.4:
        p = torch.softmax(out_row.double(), dim=-1).numpy()
        return int(rnd.choices(range(len(p)), weights=p)[0])
    spellings = [s for phrase in inc + exc for s in phrase]
    if r < 0.8 and spellings:
        s = rnd.choice(spellings)
        for k in range(len(s) - 1, 0, -1):
            if history[-k:] == s[:k] and rnd.random() < 0.8:
                return s[k]
        return s[0]
    pool = sorted({t for s in spellings for t in s} | {1, 2, 3, EOS})
    return rnd.choice(pool)


@pytest.mark.parametrize("seed", range(3))
def test_lexical_constraints_steps_match_reference(seed: int) -> None:
    cls = get("lexical_constraints")
    tok = WordTokenizer()
    rows, phrases, refs = lexical_rows(tok)
    rnd = random.Random(seed)
    g = torch.Generator().manual_seed(seed)
    totals = [{"forced_tokens": 0, "banned_hits": 0, "conflicts": 0} for _ in rows]
    forced_seen = banned_seen = boosted_seen = 0
    for step in range(40):
        logits = random_logits(g, len(rows), masked_rows=(0, 3, 6))
        before = logits.clone()
        out = cls.apply(logits, rows)
        assert torch.equal(logits, before), "apply modified its input in place"
        assert out.shape == logits.shape and out.dtype == logits.dtype
        for i, row in enumerate(rows):
            inc, exc = phrases[i]
            p = row.params
            expected, info = refs[i].step(logits[i].numpy(), row.output_ids)
            label = f"seed={seed} step={step} row={i} history={list(row.output_ids)}"
            assert_row_matches(out[i], expected, label)
            assert torch.isfinite(out[i]).any(), label
            totals[i]["forced_tokens"] += info["forced"]
            totals[i]["banned_hits"] += info["banned_hits"]
            totals[i]["conflicts"] += info["conflict"]
            for key, value in totals[i].items():
                assert row.stats[key] == value, (key, label)
            assert row.stats["satisfied"] == info["satisfied"], label
            assert row.stats["unsatisfiable"] == info["unsatisfiable"], label
            forced_seen += info["forced"]
            banned_seen += info["banned_hits"]
            boosted_seen += p["boost"] > 0 and not info["forced"]
            token = next_token(rnd, out[i], inc, exc, list(row.output_ids))
            cls.on_token(row, token)
            row.output_ids.append(token)
    assert forced_seen > 0 and banned_seen > 0 and boosted_seen > 0
    # include [6, 7, 8] vs exclude [7, 8]: restarted at most R = 3 times.
    assert rows[7].state["starts"] == [3]
    assert rows[5].stats["satisfied"] >= 1.0


def test_lexical_constraints_apply_twice_is_idempotent() -> None:
    """Two calls without a new token give the same rows (the matchers only consume
    new tokens); the engine calls apply once per step."""
    cls = get("lexical_constraints")
    rows, _, _ = lexical_rows(WordTokenizer())
    logits = random_logits(torch.Generator().manual_seed(3), len(rows))
    first = cls.apply(logits, rows)
    for i, row in enumerate(rows):
        row.output_ids.append(int(first[i].argmax()))
    second = cls.apply(logits, rows)
    gauges = [(r.stats["satisfied"], r.stats["unsatisfiable"]) for r in rows]
    third = cls.apply(logits, rows)
    assert torch.equal(second, third)
    assert gauges == [(r.stats["satisfied"], r.stats["unsatisfiable"]) for r in rows]
    assert all(r.state["scanned"] == len(r.output_ids) for r in rows)


def test_lexical_constraints_conflicts_and_fallbacks() -> None:
    cls = get("lexical_constraints")
    base = validate_params(cls.params, {"force_after": 0})

    def row(include, exclude, history=(), eos=(EOS,)):
        params = dict(base, include_token_ids=encode_keywords(include),
                      exclude_token_ids=encode_keywords(exclude))
        return RowContext(params=params, prompt_ids=[1], output_ids=list(history),
                          eos_token_ids=list(eos))

    v = 12
    logits = torch.full((6, v), NEG_INF)
    rows = []
    # 0: the grammar allows only EOS while a phrase is missing and its tokens are
    #    masked: the EOS block is dropped (a conflict), the ban on 4 still holds.
    logits[0, [EOS, 4]] = torch.tensor([1.0, 2.0])
    rows.append(row([[[5, 6]]], [[[4]]]))
    # 1: only a banned token is allowed: the row is left untouched (a conflict).
    logits[1, 4] = 1.0
    rows.append(row([[[5, 6]]], [[[4]]]))
    # 2: the first spelling's first token is grammar-masked: the second one is forced.
    logits[2, :] = torch.arange(v, dtype=torch.float32)
    logits[2, 5] = NEG_INF
    rows.append(row([[[5, 6], [7, 6]]], []))
    # 3: a ban across the phrase boundary (exclude 3 5, include 5 6, history ends
    #    in 3): the ban wins; nothing else to force, so the phrase is unsatisfiable
    #    at this step and the row is only masked.
    logits[3, :] = torch.arange(v, dtype=torch.float32)
    rows.append(row([[[5, 6]]], [[[3, 5]]], history=[3]))
    # 4: an in-progress phrase is continued (longest prefix first) even though
    #    another phrase comes first in the include order.
    logits[4, :] = torch.arange(v, dtype=torch.float32)
    rows.append(row([[[8, 9]], [[5, 6, 7]]], [], history=[1, 5, 6]))
    # 5: a phrase token that is an EOS id can never be forced.
    logits[5, :] = torch.arange(v, dtype=torch.float32)
    rows.append(row([[[10]]], [], eos=(10, EOS)))
    out = cls.apply(logits, rows)
    finite = [torch.isfinite(out[i]).nonzero().flatten().tolist() for i in range(6)]
    assert finite[0] == [EOS] and rows[0].stats["conflicts"] == 1.0
    assert rows[0].stats["banned_hits"] == 1.0
    assert torch.equal(out[1], logits[1]) and rows[1].stats["conflicts"] == 1.0
    assert rows[1].stats["banned_hits"] == 0.0
    assert finite[2] == [7] and rows[2].stats["forced_tokens"] == 1.0
    assert 5 not in finite[3] and EOS not in finite[3] and len(finite[3]) == v - 2
    assert rows[3].stats["unsatisfiable"] == 1.0 and rows[3].stats["forced_tokens"] == 0.0
    assert finite[4] == [7]
    assert 10 not in finite[5] and EOS not in finite[5]
    assert rows[5].stats["unsatisfiable"] == 1.0
    for i, r in enumerate(rows):
        inc = decode_keywords(r.params["include_token_ids"])
        exc = decode_keywords(r.params["exclude_token_ids"])
        reference = ref.LexicalConstraints(inc, exc, r.eos_token_ids, 0, 0.0)
        expected, _ = reference.step(logits[i].numpy(), r.output_ids)
        assert_row_matches(out[i], expected, f"row={i}")


def test_lexical_constraints_gives_up_a_blocked_phrase() -> None:
    """A phrase whose continuation is always banned is restarted R = n + 2 times,
    then no longer forced; EOS stays blocked and the ban is never broken."""
    cls = get("lexical_constraints")
    params = validate_params(cls.params, {"force_after": 0})
    params["include_token_ids"] = encode_keywords([[[6, 7, 8]]])
    params["exclude_token_ids"] = encode_keywords([[[7, 8]]])
    row = RowContext(params=params, prompt_ids=[1], output_ids=[], eos_token_ids=[EOS])
    reference = ref.LexicalConstraints([[[6, 7, 8]]], [[[7, 8]]], [EOS], 0, 0.0)
    g = torch.Generator().manual_seed(0)
    for _ in range(12):
        logits = torch.randn(1, 16, generator=g)
        logits[0, [EOS, 8]] += 10.0  # the model wants to stop, or to finish the phrase
        out = cls.apply(logits, [row])
        expected, _ = reference.step(logits[0].numpy(), row.output_ids)
        assert_row_matches(out[0], expected)
        assert torch.isneginf(out[0, EOS])
        row.output_ids.append(int(out[0].argmax()))
    assert row.output_ids[:6] == [6, 7, 6, 7, 6, 7]
    assert not occurs(row.output_ids, [7, 8])
    assert row.state["starts"] == [3] and row.stats["forced_tokens"] == 6.0
    assert row.stats["unsatisfiable"] == 1.0 and row.stats["satisfied"] == 0.0


# -- lexical_constraints: decoding loops ------------------------------------------------

SIM_INCLUDE = ["blue whale", "red fox"]
SIM_EXCLUDE = ["red car", "ant", "green"]
SIM_SPECS = [
    {"include": SIM_INCLUDE, "exclude": SIM_EXCLUDE, "force_after": 0},
    {"include": SIM_INCLUDE, "exclude": SIM_EXCLUDE, "force_after": 10, "boost": 2.0},
    {"include": SIM_INCLUDE, "exclude": SIM_EXCLUDE, "force_after": 25},
    {"include": ["blue whale"], "exclude": SIM_EXCLUDE[:2], "force_after": 5, "boost": 0.5},
]
SIM_STEPS = 60  # ≥ the largest force_after + every include phrase's tokens, with room


def simulate(method: bool, greedy: bool, runs: int = 200, seed: int = 0):
    """``runs`` decoding loops, batched as rows, on a random "model" that likes EOS
    and the exclude phrases (it continues a started exclude phrase strongly).
    Returns each run's tokens and whether it ended with EOS, plus a list of
    violations of "EOS is blocked while an include phrase is missing"."""
    cls = get("lexical_constraints")
    tok = WordTokenizer()
    rows, include, exclude = [], [], []
    for i in range(runs):
        spec = SIM_SPECS[i % len(SIM_SPECS)]
        params = cls.prepare(validate_params(cls.params, spec), tok)
        temperature = 0.0 if greedy else (1.0, 0.7)[i % 2]
        rows.append(RowContext(params=params, prompt_ids=[1, 2, 3], output_ids=[],
                               temperature=temperature, eos_token_ids=[EOS]))
        include.append([tok.spellings(p) for p in spec["include"]])
        exclude.append([s for p in spec["exclude"] for s in tok.spellings(p)])
    assert max(t for inc in include for p in inc for s in p for t in s) < VOCAB
    g = torch.Generator().manual_seed(seed)
    active = list(range(runs))
    ended = [False] * runs
    eos_leaks = []
    for _ in range(SIM_STEPS):
        if not active:
            break
        logits = 1.5 * torch.randn(len(active), VOCAB, generator=g)
        logits[:, EOS] += 2.5
        for j, i in enumerate(active):
            hist = rows[i].output_ids
            for s in exclude[i]:
                logits[j, s[0]] += 1.5
                for k in range(len(s) - 1, 0, -1):
                    if hist[-k:] == s[:k]:
                        logits[j, s[k]] += 5.0
                        break
        batch = [rows[i] for i in active]
        out = cls.apply(logits, batch) if method else logits
        if method:
            for j, i in enumerate(active):
                missing = [p for p in include[i]
                           if not any(occurs(rows[i].output_ids, s) for s in p)]
                if missing and torch.isfinite(out[j, EOS]):
                    eos_leaks.append((i, list(rows[i].output_ids)))
        if greedy:
            tokens = out.argmax(dim=-1).tolist()
        else:
            temps = torch.tensor([r.temperature for r in batch]).unsqueeze(1)
            probs = torch.softmax(out.double() / temps, dim=-1)
            tokens = torch.multinomial(probs, 1, generator=g).flatten().tolist()
        still = []
        for j, i in enumerate(active):
            cls.on_token(rows[i], tokens[j])
            rows[i].output_ids.append(tokens[j])
            if tokens[j] == EOS:
                ended[i] = True
            else:
                still.append(i)
        active = still
    return rows, include, exclude, ended, eos_leaks


def rates(rows, include, exclude):
    with_all = sum(all(any(occurs(r.output_ids, s) for s in p) for p in inc)
                   for r, inc in zip(rows, include))
    with_banned = sum(any(occurs(r.output_ids, s) for s in exc) for r, exc in zip(rows, exclude))
    return with_all / len(rows), with_banned / len(rows)


@pytest.mark.parametrize("greedy", [False, True], ids=["sampled", "greedy"])
def test_lexical_constraints_hold_in_every_run(greedy: bool) -> None:
    rows, include, exclude, ended, eos_leaks = simulate(method=True, greedy=greedy)
    included, banned = rates(rows, include, exclude)
    assert included == 1.0  # every include phrase, in every run
    assert banned == 0.0  # no exclude phrase, in any run
    assert eos_leaks == []  # EOS was -inf whenever an include phrase was missing
    for r, inc, done in zip(rows, include, ended):
        if done:  # a run that ended had every phrase before its EOS
            assert all(any(occurs(r.output_ids[:-1], s) for s in p) for p in inc)
        assert r.stats["satisfied"] == len(inc) or not done
        assert r.stats["conflicts"] == 0.0 and r.stats["unsatisfiable"] == 0.0
    assert sum(ended) >= len(rows) // 2  # EOS did come once allowed
    assert sum(r.stats["forced_tokens"] > 0 for r in rows) > 0
    assert sum(r.stats["banned_hits"] for r in rows) > 0


def test_simulation_model_violates_constraints_without_the_method() -> None:
    """The same loops without the method: the constraints are far from met, so the
    test above checks the method and not an easy model."""
    for greedy in (False, True):
        rows, include, exclude, ended, _ = simulate(method=False, greedy=greedy)
        included, banned = rates(rows, include, exclude)
        assert included < 0.05, greedy
        assert banned > 0.3, (greedy, banned)
    rows, include, exclude, ended, _ = simulate(method=False, greedy=False)
    assert sum(ended) > 0.9 * len(rows)


# -- lexical_constraints: prepare --------------------------------------------------------


def test_lexical_constraints_prepare_output() -> None:
    tok = WordTokenizer()
    p = prepared("lexical_constraints", {"include": ["blue whale", "red fox"],
                                         "exclude": ["ant"]}, tok)
    json.dumps(p)  # JSON-able, flat
    for key in ("include_token_ids", "exclude_token_ids"):
        assert all(isinstance(t, int) for t in p[key])
    assert decode_keywords(p["include_token_ids"]) == [
        [tuple(s) for s in tok.spellings("blue whale")],
        [tuple(s) for s in tok.spellings("red fox")],
    ]
    assert p["include_token_ids"].count(-1) == 1 and p["include_token_ids"].count(-2) == 2
    assert decode_keywords(p["exclude_token_ids"]) == [[tuple(s) for s in tok.spellings("ant")]]
    empty = prepared("lexical_constraints", {}, None)
    assert empty["include_token_ids"] == [] and empty["exclude_token_ids"] == []


def test_lexical_constraints_prepare_drops_unwritable_spellings() -> None:
    tok = WordTokenizer()
    p = prepared("lexical_constraints", {"include": ["carpet"], "exclude": ["car"]}, tok)
    # "carpet" → ["car", "pet"] contains the excluded spelling "car"; " carpet" does not.
    assert decode_keywords(p["include_token_ids"]) == [[tuple(tok.spellings("carpet")[0])]]


REFUSALS = [  # (request, the parameter the error names, tokenizer chunk size)
    ({"include": ["ok", "  "]}, "include", 3),
    ({"exclude": [""]}, "exclude", 3),
    ({"include": ["x" * 32]}, "include", 1),  # " " + 32 one-character tokens > 32
    ({"exclude": ["y" * 40]}, "exclude", 1),
    ({"include": ["red fox"], "exclude": [" red   fox "]}, "include", 3),
    ({"include": ["red car park"], "exclude": ["car"]}, "include", 3),  # contains it
    ({"include": ["z"] * 17}, "include", 3),
    ({"exclude": ["z"] * 65}, "exclude", 3),
    ({"include": ["w" * 65]}, "include", 3),
    ({"exclude": [3]}, "exclude", 3),
    ({"force_after": -1}, "force_after", 3),
    ({"force_after": 1.5}, "force_after", 3),
    ({"boost": -0.5}, "boost", 3),
    ({"boost": 21.0}, "boost", 3),
    ({"include_token_ids": [1, 2]}, "include_token_ids", 3),  # prepared keys are not params
    ({"exclude_token_ids": [1]}, "exclude_token_ids", 3),
]


@pytest.mark.parametrize(("given", "param", "chunk"), REFUSALS)
def test_lexical_constraints_refusals(given: dict, param: str, chunk: int) -> None:
    cls = get("lexical_constraints")
    with pytest.raises(IlsiRequestError) as info:
        cls.prepare(validate_params(cls.params, given), WordTokenizer(size=1000, chunk=chunk))
    assert param in info.value.param and f"ilsi.{param}" in str(info.value)


def test_lexical_constraints_refusals_without_tokenizer_or_vocabulary() -> None:
    cls = get("lexical_constraints")
    for param in ("include", "exclude"):
        with pytest.raises(IlsiRequestError, match=f"ilsi.{param}"):
            cls.prepare(validate_params(cls.params, {param: ["cat"]}), None)
        with pytest.raises(IlsiRequestError, match=f"ilsi.{param}.*vocabulary"):
            cls.prepare(validate_params(cls.params, {param: ["a long phrase"]}),
                        WordTokenizer(size=12))
    # 32 tokens is the limit: " " + 31 one-character tokens is accepted.
    ok = cls.prepare(validate_params(cls.params, {"include": ["x" * 31]}),
                     WordTokenizer(size=1000, chunk=1))
    assert max(len(s) for p in decode_keywords(ok["include_token_ids"]) for s in p) == 32
    # A phrase that encodes to a special token (EOS) cannot be required.
    tok = WordTokenizer()
    tok.all_special_ids = tok.encode("<eos>", add_special_tokens=False)
    with pytest.raises(IlsiRequestError, match="ilsi.include.*special"):
        cls.prepare(validate_params(cls.params, {"include": ["<eos>"]}), tok)
    assert cls.prepare(validate_params(cls.params, {"exclude": ["<eos>"]}), tok)


# -- keyword_decay -----------------------------------------------------------------------


def test_keyword_decay_steps_match_reference() -> None:
    cls = get("keyword_decay")
    tok = WordTokenizer(size=200)
    specs = [
        {"keywords": ["apple", "pear"]},
        {"keywords": ["apple", "kiwi fruit"], "strength": -3.5, "decay": 0.5},
        {"keywords": ["pear"], "strength": 6.0, "decay": 1.0, "until_present": False},
        {"keywords": ["kiwi fruit"], "decay": 0.0},
        {},
    ]
    rows = [RowContext(params=cls.prepare(validate_params(cls.params, s), tok), prompt_ids=[1],
                       output_ids=[], temperature=1.0) for s in specs]
    spell = {kw: tok.spellings(kw) for kw in ("apple", "pear", "kiwi fruit")}
    schedule = [
        [1, 2, 3] + spell["apple"][0] + [4, 5, 6, 7, 8, 9, 1, 2],
        [1] + spell["apple"][1] + spell["kiwi fruit"][0][:1] + spell["kiwi fruit"][0] + [5] * 6,
        [1, 2] + spell["pear"][0] + [3, 4, 5, 6, 7, 8, 9, 1],
        [1, 2, 3, 4, 5, 6, 7, 8, 9, 1, 2, 3],
        [1, 2, 3, 4, 5, 6, 7, 8, 9, 1, 2, 3],
    ]
    g = torch.Generator().manual_seed(7)
    for step in range(12):
        logits = random_logits(g, len(rows), vocab=150, masked_rows=(0, 2))
        before = logits.clone()
        out = cls.apply(logits, rows)
        assert torch.equal(logits, before)
        for i, row in enumerate(rows):
            p = row.params
            expected = ref.keyword_decay(logits[i].numpy(), row.output_ids,
                                         [spell[k] for k in p["keywords"]], p["strength"],
                                         p["decay"], p["until_present"])
            assert_row_matches(out[i], expected, f"keyword_decay step={step} row={i}")
            assert row.stats["weight"] == pytest.approx(p["strength"] * p["decay"] ** step)
            row.output_ids.append(schedule[i][step])
    assert rows[0].stats["keywords_pending"] == 1.0  # pear never appeared
    assert rows[1].stats["keywords_pending"] == 0.0
    assert rows[2].stats["keywords_pending"] == 1.0  # until_present off: stays pending


def test_keyword_decay_shares_keyword_boost_tokenizing() -> None:
    tok = WordTokenizer(size=200)
    kws = ["apple", "banana split"]
    decay = prepared("keyword_decay", {"keywords": kws}, tok)
    boost = prepared("keyword_boost", {"keywords": kws}, tok)
    assert decay["keyword_token_ids"] == boost["keyword_token_ids"]
    for given, param in (({"keywords": ["ok", " "]}, "keywords"),
                         ({"keywords": ["a"] * 65}, "keywords"),
                         ({"decay": 1.5}, "decay"), ({"decay": -0.1}, "decay"),
                         ({"strength": 25.0}, "strength"), ({"until_present": 1}, "until_present"),
                         ({"keyword_token_ids": [1]}, "keyword_token_ids")):
        with pytest.raises(IlsiRequestError, match=param):
            prepared("keyword_decay", given, tok)
    with pytest.raises(IlsiRequestError, match="keywords"):
        prepared("keyword_decay", {"keywords": ["apple"]}, None)


# -- length_target -----------------------------------------------------------------------


def test_length_target_matches_reference() -> None:
    cls = get("length_target")
    specs = [{"target": 5}, {"target": 1, "strength": 0.0}, {"target": 8, "tolerance": 0},
             {"target": 3, "strength": 7.5, "tolerance": 4}, {}, {"target": 12, "strength": 1.0}]
    eos = [[EOS], [EOS], [EOS, 3], [7], [EOS, 200], [EOS]]
    rows = [RowContext(params=validate_params(cls.params, s), prompt_ids=[1], output_ids=[],
                       temperature=1.0, eos_token_ids=e) for s, e in zip(specs, eos)]
    g = torch.Generator().manual_seed(11)
    for step in range(16):
        logits = random_logits(g, len(rows), vocab=100, masked_rows=(2, 3))
        logits[0, EOS] = NEG_INF if step == 4 else logits[0, EOS]
        before = logits.clone()
        out = cls.apply(logits, rows)
        assert torch.equal(logits, before)
        for i, row in enumerate(rows):
            p = row.params
            expected = ref.length_target(logits[i].numpy(), row.output_ids, row.eos_token_ids,
                                         p["target"], p["strength"], p["tolerance"])
            assert_row_matches(out[i], expected, f"length_target step={step} row={i}")
            shift = row.stats["eos_shift"]
            n = len(row.output_ids)
            assert (shift < 0) == (n < p["target"] and p["strength"] > 0)
            assert (shift > 0) == (n > p["target"] and p["strength"] > 0)
            assert abs(shift) < p["strength"] or p["strength"] == 0
            row.output_ids.append(1 + step % 5)


# -- registry, defaults and a smoke run --------------------------------------------------

NEW = ("keyword_decay", "length_target", "lexical_constraints")


@pytest.mark.parametrize("name", NEW)
def test_new_method_cards_and_defaults_smoke(name: str) -> None:
    cls = get(name)
    assert cls is not None and cls.name == name and cls.family == "independent/constrained"
    module_doc = sys.modules[cls.__module__].__doc__ or ""
    assert re.search(r"(19|20)\d\d", cls.paper) and re.search(r"[=≤≥<>]", module_doc)
    params = cls.prepare(validate_params(cls.params, {}), WordTokenizer())
    rows = [RowContext(params=dict(params), prompt_ids=[1, 2], output_ids=[3, 4, 3],
                       temperature=t, eos_token_ids=[EOS]) for t in (0.0, 0.7, 1.3)]
    logits = random_logits(torch.Generator().manual_seed(1), 3, masked_rows=(0,))
    before = logits.clone()
    for _ in range(3):
        out = cls.apply(logits, rows)
        assert torch.equal(logits, before)
        assert not torch.isnan(out).any() and not torch.isposinf(out).any()
        assert torch.isneginf(out[torch.isneginf(logits)]).all()
        for i, row in enumerate(rows):
            assert torch.isfinite(out[i]).any()
            token = int(out[i].argmax())
            cls.on_token(row, token)
            row.output_ids.append(token)
        assert all(math.isfinite(v) for row in rows for v in row.stats.values())
