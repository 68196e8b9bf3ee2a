"""NEST (``sglang_ilsi/methods/retrieval/nest.py``) without a server: the store's
document ends and continuations, the formulas, and the step-by-step state machine
against Algorithm 1 replayed on synthetic distributions (hypothesis)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sglang_ilsi import datastore
from sglang_ilsi.methods.base import Requirements, RowContext, continuation_key, datastore_key
from sglang_ilsi.methods.retrieval.nest import Nest, accepted, retrieval_weight, span_after
from sglang_ilsi.params import validate_params

DOCS = ["def add(a, b):\n    return a + b\n", "x = 1\ny = 2\n", "print('hello world')\n"]


@pytest.fixture(scope="module")
def store(tiny_model_path, tmp_path_factory):
    root = tmp_path_factory.mktemp("nest-corpus")
    for i, text in enumerate(DOCS):
        (root / f"{i}.py").write_text(text)
    out = tmp_path_factory.mktemp("stores") / "nest"
    datastore.build(str(root), tiny_model_path, str(out),
                    datastore.BuildOptions(window=8, stride=3, shard_docs=2), quiet=True)
    return datastore.Store(str(out), tiny_model_path)


def test_document_ends_and_continuations(store, tiny_model_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_path)
    ids = [tok(d)["input_ids"] for d in DOCS]
    ends = np.cumsum([len(i) - 1 for i in ids])
    assert store.document_ends.tolist() == ends.tolist()
    with open(f"{store.path}/meta.json") as f:
        assert "documents.npy" in json.load(f)["files"]
    with open(f"{store.path}/corpus.jsonl") as f:  # one end per line of the corpus
        assert [json.loads(line) for line in f] == DOCS
    # entry j of document 0 has value ids[0][j+1]; its continuation is ids[0][j+2:]
    first = store.continuations(np.array([0, 1, ends[0] - 1, ends[0], -1]), 4)
    assert first[0].tolist() == [0] + (ids[0][2:6] + [-1] * 4)[:4]
    assert first[1].tolist() == [0] + (ids[0][3:7] + [-1] * 4)[:4]
    assert first[2].tolist() == [0] + [-1] * 4  # the document's last entry: nothing follows
    assert first[3].tolist() == [1] + (ids[1][2:6] + [-1] * 4)[:4]  # the next document's own
    assert first[4].tolist() == [-1] * 5
    assert store.documents_of(np.array([ends[1], ends[2] - 1])).tolist() == [2, 2]


def test_search_entries_agree_with_search(store):
    queries = store.index.reconstruct_n(0, 5)
    dist, tokens, entries = store.search_entries(queries, 3)
    assert entries[:, 0].tolist() == list(range(5))
    assert tokens.tolist() == store.values[entries].tolist()
    assert np.array_equal(dist, store.search(queries, 3)[0])


def test_older_stores_are_refused_for_spans(store, tmp_path):
    meta = dict(store.meta)
    meta["files"] = {k: v for k, v in meta["files"].items() if k != "documents.npy"}
    with pytest.raises(datastore.DatastoreError, match="documents.npy"):
        datastore.check_spans(meta, "old")
    datastore.check_spans(store.meta, "new")


def test_formulas():
    d = torch.tensor([1.0, 2.0, 4.0, float("inf")])
    assert retrieval_weight(d, 0.3, 0.1) == pytest.approx(1 / (1 + math.exp(-(0.25 - 0.3) / 0.1)))
    assert retrieval_weight(torch.tensor([float("inf")]), 0.3, 0.1) == 1.0
    assert retrieval_weight(torch.zeros(3), 0.3, 0.1) == pytest.approx(1 / (1 + math.exp(3)))
    # rows: the neighbour's document, then the tokens that followed
    assert span_after(7, [5, 7, 7], [[0, 1, 2], [4, 3, -1], [5, 4, 4]], 5) == (4, [3])
    assert span_after(9, [5, 7], [[0, 1], [0, 2]], 3) == (-1, [])
    assert span_after(5, [5], [[2, 1, 2, 3]], 2) == (2, [1, 2])
    p = torch.tensor([0.5, 0.3, 0.01, 0.19], dtype=torch.float64)
    assert accepted(p, 1, 0.5) and not accepted(p, 2, 0.5) and accepted(p, 2, 0.01)


def test_requirements():
    params = validate_params(Nest.params, {"datastore": "s", "k": 8, "span": 5})
    assert Nest.requirements(params) == Requirements(datastores=(("s", 8, 1),),
                                                     continuations=(("s", 4),))
    one = validate_params(Nest.params, {"datastore": "s", "span": 1})
    assert Nest.requirements(one).continuations == ()
    merged = Requirements(continuations=(("s", 4),)).merged(
        Requirements(continuations=(("s", 9), ("t", 2))))
    assert merged.continuations == (("s", 9), ("t", 2))


def _algorithm_1(steps, params):
    """Algorithm 1 replayed on precomputed steps: ``steps(history)`` → (p_lm,
    distances, tokens, following) at the position after ``history`` (``following``
    rows: the neighbour's document, then the tokens after it). Returns the tokens,
    the copied count and the sources ``[first position, document, tokens]``."""
    out, copied, sources = [], 0, []
    k, span = params["k"], params["span"]

    def mixture(history):
        p_lm, d, toks, following = steps(history)
        w = np.exp(-(d - d.min()) / params["knn_temperature"])
        w /= w.sum()
        p_knn = np.zeros(len(p_lm))
        np.add.at(p_knn, toks, w)
        ratio = d.min() / d.max() if d.max() > 0 else 0.0
        lam = 1 / (1 + math.exp(-(ratio - params["alpha"]) / params["tau"]))
        return lam * p_lm + (1 - lam) * p_knn, lam, toks, following

    while len(out) < params["n"]:
        p, lam, toks, following = mixture(out)
        out.append(int(np.argmax(p)))
        if lam > params["delta"] or span == 1 or len(out) >= params["n"]:
            continue
        j = next((j for j in range(k) if toks[j] == out[-1]), None)
        draft = []
        for t in following[j][1:span] if j is not None else []:
            if t < 0:  # the document ended
                break
            draft.append(int(t))
        if draft:
            sources.append([len(out) - 1, int(following[j][0]), 1])
        for token in draft:
            p, _, _, _ = mixture(out)
            if min(1, p[token] / (params["gamma"] * p.max())) > 0.5:
                out.append(int(token))
                copied += 1
                sources[-1][2] += 1
            else:
                out.append(int(np.argmax(p)))
                break
            if len(out) >= params["n"]:
                break
    return out, copied, sources


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**16), gamma=st.sampled_from([0.01, 0.2, 0.9]),
       alpha=st.sampled_from([0.3, 0.8]), span=st.integers(1, 5))
def test_the_step_machine_is_algorithm_1(seed, gamma, alpha, span):
    """The method, called once per step with its own state as the engine calls it,
    emits Algorithm 1's tokens (greedy) and counts the copied ones."""
    vocab, k, n = 12, 4, 14
    cache: dict[tuple[int, ...], tuple] = {}

    def steps(history):
        key = tuple(history)
        if key not in cache:
            local = np.random.default_rng(abs(hash((seed, key))) % 2**32)
            logits = local.normal(size=vocab) * 2
            p_lm = np.exp(logits - logits.max())
            p_lm /= p_lm.sum()
            d = np.sort(local.uniform(0.0, 10.0, size=k) * local.uniform(0.05, 1.0, size=k))
            toks = local.integers(0, vocab, size=k)
            following = np.concatenate([local.integers(0, 5, size=(k, 1)), local.integers(
                -1, vocab, size=(k, max(span - 1, 1)))], axis=1)
            cache[key] = (p_lm, d, toks, following, logits)
        return cache[key][:4]

    params = validate_params(Nest.params, {"datastore": "s", "k": k, "span": span,
                                           "gamma": gamma, "alpha": alpha,
                                           "knn_temperature": 3.0})
    want, copied, sources = _algorithm_1(steps, {**params, "n": n})
    row = RowContext(params=params, prompt_ids=[1], output_ids=[], max_new_tokens=n)
    got: list[int] = []
    while len(got) < n:
        p_lm, d, toks, following = steps(got)
        logits = torch.tensor(cache[tuple(got)][4], dtype=torch.float32)[None]
        row.output_ids = list(got)
        row.inputs = {datastore_key("s"): torch.stack([torch.tensor(d, dtype=torch.float32),
                                                      torch.tensor(toks, dtype=torch.float32)]),
                      continuation_key("s"): torch.tensor(following)}
        out = Nest.apply(logits, [row])
        got.append(int(torch.argmax(out[0])))
    assert got == want
    assert row.stats.get("nest_span_tokens", 0) == copied
    assert row.stats.get("nest_sources", []) == sources


def test_the_overlap_schedulers_extra_step_changes_nothing():
    params = validate_params(Nest.params, {"datastore": "s", "k": 2, "span": 3,
                                           "knn_temperature": 1.0})
    row = RowContext(params=params, prompt_ids=[1], output_ids=[3, 4], max_new_tokens=2,
                     state={"draft": [5, 6]})
    row.inputs = {datastore_key("s"): torch.tensor([[0.1, 5.0], [1.0, 2.0]]),
                  continuation_key("s"): torch.tensor([[1, 2], [3, 4]])}
    Nest.apply(torch.zeros(1, 8), [row])
    assert row.state == {"draft": [5, 6]} and not row.stats
