"""The datastore (``sglang_ilsi/datastore.py``), its CLI, its launch flag and the
``knn_lm`` method, on the tiny model without a server."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from sglang_ilsi import cli, datastore
from sglang_ilsi.config import parse
from sglang_ilsi.errors import IlsiConfigError
from sglang_ilsi.methods.base import Requirements, RowContext, datastore_key
from sglang_ilsi.params import validate_params
from sglang_ilsi.registry import get

TEXT = ("def add(a, b):\n    return a + b\n\n" * 6, "The quick brown fox jumps over the lazy dog. " * 8)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    (root / "a.py").write_text(TEXT[0])
    (root / "sub").mkdir()
    (root / "sub" / "b.md").write_text(TEXT[1])
    (root / "c.jsonl").write_text(json.dumps({"text": TEXT[1][:120]}) + "\nnot json\n"
                                  + json.dumps("a plain string record") + "\n")
    (root / "ignored.bin").write_bytes(b"\x00\x01")
    return root


OPTIONS = datastore.BuildOptions(window=32, stride=8, shard_docs=1)


@pytest.fixture(scope="module")
def store(corpus, tiny_model_path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("stores") / "flat"
    datastore.build(str(corpus), tiny_model_path, str(out), OPTIONS, quiet=True)
    return out


def test_windows_give_every_position_one_key():
    for n, window, stride in [(1, 4, 1), (2, 4, 1), (10, 4, 1), (10, 4, 3), (50, 16, 8), (7, 64, 8)]:
        positions = []
        for start, end, first in datastore.windows(list(range(n)), window, stride):
            assert end - start <= window and start <= first < end
            positions += list(range(first, end - 1))
        assert positions == list(range(max(0, n - 1))), (n, window, stride)


def test_corpus_files_and_documents(corpus):
    files = datastore.corpus_files(corpus)
    assert [p.relative_to(corpus).as_posix() for p in files] == ["a.py", "c.jsonl", "sub/b.md"]
    assert list(datastore.documents(corpus / "c.jsonl")) == [TEXT[1][:120], "a plain string record"]


def test_keys_values_and_meta_match_transformers(store, corpus, tiny_model_path):
    """Every key is transformers' final hidden state at a position of a document
    and its value the next token; entries count every token with a successor."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    s = datastore.Store(str(store), tiny_model_path)
    tok = AutoTokenizer.from_pretrained(tiny_model_path)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_path, dtype=torch.float32).eval()
    docs = [d for p in datastore.corpus_files(corpus) for d in datastore.documents(p)]
    ids = [tok(d)["input_ids"] for d in docs]
    assert s.meta["entries"] == sum(len(i) - 1 for i in ids) == s.index.ntotal
    assert s.meta["layer"] == model.config.num_hidden_layers and s.layer == 2
    first = ids[0][:20]
    with torch.no_grad():
        hidden = model(torch.tensor([first]), output_hidden_states=True).hidden_states[-1][0]
    dist, tokens = s.search(hidden[:-1].numpy(), 1)
    assert np.allclose(dist[:, 0], 0, atol=1e-6)
    assert tokens[:, 0].tolist() == first[1:]


def test_info_cli(store, capsys):
    assert cli.main(["datastore", "info", str(store)]) == 0
    out = capsys.readouterr().out
    for needle in ("entries:", "size:", "layer:      2 (final hidden state", "model:", "flat"):
        assert needle in out


def test_build_is_atomic_and_resumable(corpus, tiny_model_path, tmp_path, store):
    out = tmp_path / "store"

    class Stop(Exception):
        pass

    def stop_after_first(i):
        if i == 0:
            raise Stop

    with pytest.raises(Stop):
        datastore.build(str(corpus), tiny_model_path, str(out), OPTIONS, quiet=True,
                        on_shard=stop_after_first)
    assert not out.exists()  # nothing half-written at the store's path
    assert (tmp_path / "store.partial" / "shard-00000.done").is_file()
    seen = []
    meta = datastore.build(str(corpus), tiny_model_path, str(out), OPTIONS, quiet=True,
                           on_shard=seen.append)
    assert 0 not in seen and seen  # resumed after the finished shard
    assert not (tmp_path / "store.partial").exists()
    assert np.array_equal(np.load(out / "values.npy"), np.load(store / "values.npy"))
    assert meta["entries"] == json.loads((store / "meta.json").read_text())["entries"]
    with pytest.raises(datastore.DatastoreError, match="exists"):
        datastore.build(str(corpus), tiny_model_path, str(out), OPTIONS, quiet=True)


def test_ivf_records_its_recall(corpus, tiny_model_path, tmp_path):
    meta = datastore.build(str(corpus), tiny_model_path, str(tmp_path / "ivf"),
                           datastore.BuildOptions(window=32, stride=8, index="ivf", nlist=4,
                                                  nprobe=4), quiet=True)
    assert meta["index"]["kind"] == "ivf" and meta["index"]["nprobe"] == 4
    assert meta["index"]["recall"]["recall_at_k"] == 1.0  # every cell probed: exact
    s = datastore.Store(str(tmp_path / "ivf"))
    assert s.search(np.zeros((3, s.dim), np.float32), 5)[0].shape == (3, 5)


def test_reindex_gives_the_same_keys_another_index(store, tiny_model_path, tmp_path, capsys):
    """``datastore reindex``: an ivf and an ivfsq8 copy of the flat store, from its own keys
    (no forward pass); a compressed store cannot be a source."""
    assert cli.main(["datastore", "reindex", str(store), "--out", str(tmp_path / "ivf"),
                     "--index", "ivf", "--nlist", "4", "--nprobe", "4"]) == 0
    assert "reindexed:  from" in capsys.readouterr().out
    flat, ivf = datastore.Store(str(store)), datastore.Store(str(tmp_path / "ivf"),
                                                               tiny_model_path)
    assert ivf.meta["index"]["kind"] == "ivf" and ivf.meta["index"]["recall"]["recall_at_k"] == 1
    assert ivf.meta["reindexed_from"]["index"]["kind"] == "flat"
    for name in (datastore.VALUES, datastore.DOCUMENTS, datastore.CORPUS):
        assert (Path(store) / name).read_bytes() == (tmp_path / "ivf" / name).read_bytes()
    keys = flat.index.reconstruct_n(0, flat.index.ntotal)
    queries = keys[::7] + 0.01
    for a, b in zip(flat.search(queries, 5), ivf.search(queries, 5)):
        assert np.allclose(a, b, atol=1e-4)  # every cell probed: the flat store's answers
    # from the ivf copy on: 8-bit keys, the same values, distances close to exact
    meta = datastore.reindex(str(tmp_path / "ivf"), str(tmp_path / "sq8"), datastore.BuildOptions(
        index="ivfsq8", nlist=4, nprobe=4))
    assert meta["index"]["kind"] == "ivfsq8" and meta["entries"] == flat.meta["entries"]
    sq8 = datastore.Store(str(tmp_path / "sq8"))
    assert (tmp_path / "sq8" / datastore.INDEX).stat().st_size < \
        (Path(store) / datastore.INDEX).stat().st_size / 2
    exact, _ = flat.search(queries, 1)
    approx, _ = sq8.search(queries, 1)
    assert np.allclose(approx, exact, rtol=0.05, atol=0.05)
    with pytest.raises(datastore.DatastoreError, match="keeps only compressed keys"):
        datastore.reindex(str(tmp_path / "sq8"), str(tmp_path / "again"),
                          datastore.BuildOptions(index="ivf", nlist=4))
    with pytest.raises(datastore.DatastoreError, match="exists"):
        datastore.reindex(str(store), str(tmp_path / "ivf"), datastore.BuildOptions())


def test_corrupt_and_mismatched_stores_are_refused(store, tiny_model_path, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(store, bad)
    with open(bad / "values.npy", "r+b") as f:
        f.seek(200)
        f.write(b"\x7f" * 8)
    with pytest.raises(datastore.DatastoreError, match="values.npy is corrupt"):
        datastore.verify(str(bad))
    (bad / "index.faiss").unlink()
    with pytest.raises(datastore.DatastoreError, match="index.faiss is missing"):
        datastore.verify(str(bad))
    with pytest.raises(datastore.DatastoreError, match="not a datastore"):
        datastore.verify(str(tmp_path))
    other = tmp_path / "other"
    shutil.copytree(store, other)
    meta = json.loads((other / "meta.json").read_text())
    meta["tokenizer_fingerprint"] = "f" * 32
    (other / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(datastore.DatastoreError, match="another tokenizer"):
        datastore.verify(str(other), tiny_model_path)


def test_launch_flag(store, tiny_model_path, tmp_path):
    model = ["--model-path", tiny_model_path]
    config = parse(["--ilsi-datastore", f"code={store}"], model)
    assert config.datastores == {"code": str(store)}
    assert type(config).from_json(config.to_json()).datastores == config.datastores
    other = tmp_path / "other"
    shutil.copytree(store, other)
    meta = json.loads((other / "meta.json").read_text())
    meta["model"]["fingerprint"] = "0" * 32
    (other / "meta.json").write_text(json.dumps(meta))
    for flags, needle in (
        (["--ilsi-datastore", "code"], "expected NAME=PATH"),
        (["--ilsi-datastore", f"1x={store}"], "bad name"),
        (["--ilsi-datastore", f"a={store}", "--ilsi-datastore", f"a={store}"], "given twice"),
        (["--ilsi-datastore", f"a={tmp_path / 'none'}"], "no datastore folder"),
        (["--ilsi-datastore", f"a={other}"], "was built for another model"),
    ):
        with pytest.raises(IlsiConfigError, match=needle):
            parse(flags, model)


def test_the_store_keeps_its_documents_text_for_rest(store, corpus):
    """corpus.jsonl: each stored document's text as one JSON string (SGLang's
    external n-gram corpus format), checksummed like the other files."""
    lines = (store / datastore.CORPUS).read_text(encoding="utf-8").splitlines()
    texts = [json.loads(line) for line in lines]
    expected = [t for path in datastore.corpus_files(corpus) for t in datastore.documents(path)]
    assert texts == expected
    meta = datastore.read_meta(str(store))
    assert datastore.CORPUS in meta["files"]
    assert meta["corpus"]["stored_documents"] == len(expected)
    assert datastore.rest_corpus(str(store)) == str((store / datastore.CORPUS).resolve())


def test_rest_launch_flags(store, tiny_model_path, tmp_path):
    from sglang_ilsi.config import sglang_argv

    model = ["--model-path", tiny_model_path]
    rest = ["--speculative-algorithm", "REST", *model]
    config = parse(["--ilsi-rest-datastore", str(store)], rest)
    corpus = str((store / datastore.CORPUS).resolve())
    assert config.rest_corpus == corpus
    assert type(config).from_json(config.to_json()).rest_corpus == corpus
    # SGLang sees NGRAM reading the store's text, half the draft tokens from it
    assert sglang_argv(config, rest) == [
        "--speculative-algorithm", "NGRAM", *model,
        "--speculative-ngram-external-corpus-path", corpus,
        "--speculative-ngram-external-sam-budget", "5"]
    drafts = ["--speculative-algorithm=REST", "--speculative-num-draft-tokens", "8"]
    assert sglang_argv(config, drafts)[:4] == ["--speculative-algorithm=NGRAM",
                                              "--speculative-num-draft-tokens", "8",
                                              "--speculative-ngram-external-corpus-path"]
    assert sglang_argv(config, drafts)[-1] == "3"
    chosen = [*rest, "--speculative-ngram-external-sam-budget", "3"]
    assert sglang_argv(config, chosen).count("--speculative-ngram-external-sam-budget") == 1
    assert sglang_argv(parse(["--ilsi"], model), model) == model  # not REST: untouched
    old = tmp_path / "old"
    shutil.copytree(store, old)
    (old / datastore.CORPUS).unlink()
    meta = json.loads((old / "meta.json").read_text())
    del meta["files"][datastore.CORPUS]
    (old / "meta.json").write_text(json.dumps(meta))
    for flags, argv, needle in (
        ([], rest, "REST needs --ilsi-rest-datastore"),
        (["--ilsi-rest-datastore", str(store)], model, "needs --speculative-algorithm REST"),
        (["--ilsi-rest-datastore", str(old)], rest, "has no corpus.jsonl"),
        (["--ilsi-rest-datastore", str(tmp_path / "none")], rest, "not a datastore"),
    ):
        with pytest.raises(IlsiConfigError, match=needle):
            parse(flags or ["--ilsi"], argv)


# -- the method ------------------------------------------------------------------------------

KNN = get("knn_lm")


def _row(params, neighbours=None, name="s"):
    row = RowContext(params=validate_params(KNN.params, {"datastore": name, **params}),
                     prompt_ids=[], output_ids=[])
    if neighbours is not None:
        row.inputs[datastore_key(name)] = neighbours
    return row


def test_knn_lm_equals_the_formula():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 50, generator=gen)
    logits[2, 7] = float("-inf")  # a grammar mask stays
    dist = torch.sort(torch.rand(3, 8, generator=gen) * 5).values
    tokens = torch.randint(0, 50, (3, 8), generator=gen).float()
    tokens[2, 0] = 7
    params = [{"k": 4, "knn_temperature": 1.0, "lambda": 0.25},
              {"k": 8, "knn_temperature": 3.0, "lambda": 0.9},
              {"k": 8, "knn_temperature": 0.5, "lambda": 1.0}]
    rows = [_row(p, torch.stack([dist[i], tokens[i]])) for i, p in enumerate(params)]
    out = KNN.apply(logits.clone(), rows)
    for i, p in enumerate(params):
        k, t, lam = p["k"], p["knn_temperature"], p["lambda"]
        w = torch.softmax(-dist[i, :k].double() / t, 0)
        p_knn = torch.zeros(50, dtype=torch.float64).index_add_(0, tokens[i, :k].long(), w)
        want = (lam * p_knn + (1 - lam) * torch.softmax(logits[i].double(), 0)).log()
        finite = torch.isfinite(logits[i])
        assert torch.allclose(out[i][finite].double(), want[finite], atol=1e-5)
        assert not torch.isfinite(out[i][~finite]).any()


@pytest.mark.parametrize("seed", range(6))
def test_knn_lm_sparse_mixing_equals_the_dense_mixture(seed):
    """``apply`` mixes only at the retrieved tokens; the dense p_kNN and
    :func:`knn_lm.interpolated` give the same row (masked retrieved tokens, repeated
    tokens, missing neighbours, λ at 0 and 1 included)."""
    from sglang_ilsi.methods.retrieval.knn_lm import interpolated, knn_distribution

    gen = torch.Generator().manual_seed(seed)
    vocab, k = 300, 12
    logits = torch.randn(4, vocab, generator=gen) * 4
    tokens = torch.randint(0, 20, (4, k), generator=gen).float()  # many repeats
    dist = torch.sort(torch.rand(4, k, generator=gen) * 40).values
    logits[1, tokens[1, :3].long()] = float("-inf")  # retrieved but masked
    logits[:, 250:] = float("-inf")
    dist[2, 6:], tokens[2, 6:] = float("inf"), -1.0  # fewer neighbours found
    params = [{"k": k, "knn_temperature": 5.0, "lambda": lam} for lam in (0.0, 0.4, 1.0, 0.7)]
    rows = [_row(p, torch.stack([dist[i], tokens[i]])) for i, p in enumerate(params)]
    out = KNN.apply(logits.clone(), rows)
    p_lm = torch.softmax(logits.double(), -1)
    for i, p in enumerate(params):
        dense = knn_distribution(dist[i], tokens[i], k, 5.0, vocab)
        want = interpolated(logits[i], p_lm[i], dense, p["lambda"])
        assert torch.equal(torch.isfinite(out[i]), torch.isfinite(want)), i
        finite = torch.isfinite(want)
        assert torch.allclose(out[i][finite], want[finite], atol=2e-5), i


def test_knn_lm_requirements_and_empty_store():
    assert KNN.requirements(validate_params(KNN.params, {"datastore": "a", "k": 5})) == \
        Requirements(datastores=(("a", 5, 1),))
    merged = Requirements(datastores=(("a", 5, 1), ("a", 3, 2))).merged(
        Requirements(datastores=(("a", 9, 1),)))
    assert merged.datastores == (("a", 9, 1), ("a", 3, 2)) and merged
    logits = torch.randn(1, 10)
    none_found = torch.stack([torch.full((4,), float("inf")), torch.full((4,), -1.0)])
    out = KNN.apply(logits.clone(), [_row({"lambda": 1.0}, none_found)])
    assert torch.allclose(out, torch.log_softmax(logits, -1), atol=1e-6)


def test_requests_name_a_loaded_store():
    from sglang_ilsi.config import IlsiConfig
    from sglang_ilsi.params import IlsiRequestError
    from sglang_ilsi.plan import MethodChoice, check_loaded

    def choice(**params):
        return MethodChoice("knn_lm", validate_params(KNN.params, params), 0, "request")

    one, two = IlsiConfig(datastores={"a": "/x"}), IlsiConfig(datastores={"a": "/x", "b": "/y"})
    unnamed = choice()
    check_loaded(unnamed, one)
    assert unnamed.params["datastore"] == "a"  # the only store
    check_loaded(choice(datastore="b"), two)
    for c, config, needle in ((choice(datastore="c"), two, "no datastore named 'c'"),
                              (choice(), two, "name the datastore"),
                              (choice(), IlsiConfig(), "--ilsi-datastore NAME=PATH")):
        with pytest.raises(IlsiRequestError, match=needle) as e:
            check_loaded(c, config)
        assert e.value.param == "datastore"


# -- RTD: reference stores of task examples, multi-head search ------------------------------

EXAMPLES = [{"prompt": "Q: two plus three\nA:", "completion": " five\n"},
            {"prompt": "Q: four plus four\nA:", "completion": " eight\n"},
            {"prompt": "skipped: no completion", "completion": "  "}]


@pytest.fixture(scope="module")
def reference_store(tiny_model_path, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("examples")
    (root / "train.jsonl").write_text("\n".join(json.dumps(r) for r in EXAMPLES)
                                      + "\n" + json.dumps({"text": "a plain document"}) + "\n")
    out = tmp_path_factory.mktemp("stores") / "reference"
    datastore.build(str(root), tiny_model_path, str(out), OPTIONS, quiet=True)
    return out


def test_examples_are_keyed_on_their_completions(reference_store, tiny_model_path):
    encoder = datastore.KeyEncoder(tiny_model_path, None)
    want_keys, want_values = [], []
    for text, keyed_from in [(r["prompt"] + r["completion"], len(r["prompt"]))
                             for r in EXAMPLES[:2]] + [("a plain document", 0)]:
        ids = encoder.encode(text)
        first = len(encoder.encode(text[:keyed_from])) - 1 if keyed_from else 0
        want_keys.append(encoder.keys([ids])[0][first:len(ids) - 1])
        want_values += ids[first + 1:]
    store = datastore.Store(str(reference_store), tiny_model_path)
    assert store.values.tolist() == want_values
    keys = store.index.reconstruct_n(0, store.index.ntotal)
    assert np.allclose(keys, np.concatenate(want_keys), atol=1e-5)
    meta = store.meta
    assert meta["corpus"]["documents"] == 3 and meta["corpus"]["examples"] == 2
    assert "2 of them task examples" in "\n".join(datastore.describe(meta, "x"))


def test_head_search_is_an_exact_search_per_slice(reference_store, tiny_model_path):
    store = datastore.Store(str(reference_store), tiny_model_path)
    keys = store.index.reconstruct_n(0, store.index.ntotal).astype(np.float64)
    rng = np.random.default_rng(0)
    queries = rng.standard_normal((3, store.dim)).astype(np.float32)
    heads, width = 2, store.dim // 2
    dist, tokens = store.head_search(queries, 4, heads)
    assert dist.shape == tokens.shape == (3, heads, 4)
    for q in range(3):
        for h in range(heads):
            part = slice(h * width, (h + 1) * width)
            d = ((keys[:, part] - queries[q, part].astype(np.float64)) ** 2).sum(1)
            order = np.argsort(d, kind="stable")[:4]
            assert np.allclose(dist[q, h], d[order], rtol=1e-4, atol=1e-4)
            assert tokens[q, h].tolist() == store.values[order].tolist()
    one_d, one_t = store.head_search(queries, 4, 1)
    assert np.array_equal(one_t[:, 0], store.search(queries, 4)[1])
    with pytest.raises(datastore.DatastoreError, match="do not divide"):
        store.head_search(queries, 4, store.dim + 1)


def test_rtd_equals_the_formula():
    rtd = get("rtd")
    vocab = 12
    logits = torch.randn(2, vocab)
    logits[1, 3] = float("-inf")  # a grammar's mask stays
    dist = torch.tensor([[[1.0, 4.0, 9.0], [0.25, 1.0, 16.0]]])  # squared, [heads, k]
    tokens = torch.tensor([[[2.0, 5.0, 2.0], [5.0, 7.0, 3.0]]])
    neighbours = torch.cat([dist, tokens])  # [2, heads=2, k=3]
    params = validate_params(rtd.params, {"datastore": "r", "k": 2, "temperature": 0.5,
                                          "lambda": 0.7, "heads": 2})
    row = RowContext(params=params, prompt_ids=[], output_ids=[])
    row.inputs[datastore_key("r", 2)] = neighbours
    out = rtd.apply(logits.clone(), [row, row])
    r = torch.zeros(vocab, dtype=torch.float64)
    for h in range(2):
        d = dist[0, h, :2].double().sqrt()
        w = torch.softmax(-d / 0.5, 0)
        for weight, token in zip(w, tokens[0, h, :2].long(), strict=True):
            r[token] += weight / 2
    for i in range(2):
        want = (0.7 * r + 0.3 * torch.softmax(logits[i].double(), 0)).log()
        finite = torch.isfinite(logits[i])
        assert torch.allclose(out[i][finite].double(), want[finite], atol=1e-5)
        assert not torch.isfinite(out[i][~finite]).any()
    assert rtd.requirements(params) == Requirements(datastores=(("r", 2, 2),))


def test_rtd_heads_are_checked_against_the_store(reference_store, tiny_model_path):
    from sglang_ilsi.config import IlsiConfig
    from sglang_ilsi.params import IlsiRequestError
    from sglang_ilsi.plan import MethodChoice, check_loaded

    rtd = get("rtd")
    config = IlsiConfig(datastores={"ref": str(reference_store)})
    dim = datastore.read_meta(str(reference_store))["model"]["hidden_size"]
    check_loaded(MethodChoice("rtd", validate_params(rtd.params, {"heads": 2}), 0, "request"),
                 config)
    bad = MethodChoice("rtd", validate_params(rtd.params, {"heads": 7 if dim % 7 else 5}), 0,
                       "request")
    with pytest.raises(IlsiRequestError, match="do not divide") as e:
        check_loaded(bad, config)
    assert e.value.param == "heads"
