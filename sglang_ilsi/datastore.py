"""Datastores for retrieval methods (the ``datastore`` need): building, describing,
verifying and searching a kNN-LM store on disk.

A store (Khandelwal et al. 2020, "Generalization through Memorization: Nearest
Neighbor Language Models", ICLR) maps a context to the token that followed it:
for every position t of every document of a corpus, the **key** is the model's
hidden state after reading tokens ``0..t`` at one layer, the **value** is token
``t + 1``. ``layer`` counts like transformers' ``hidden_states``: ``L`` < number
of decoder layers is the residual stream after ``L`` layers (0 = embeddings);
``L`` = number of layers (the default) is the final hidden state after the final
norm, i.e. what the LM head reads.

On disk a store is a folder, written only by renaming a finished temporary
folder into place (a reader never sees half a store)::

    meta.json     format, model and tokenizer fingerprints, layer, entries, index
                  kind and parameters, measured recall, corpus summary, checksums
    index.faiss   the keys in a faiss index: IndexFlatL2 (exact) by default, or
                  IVF-Flat / IVF-PQ for large stores (recall measured at build)
    values.npy    int32 next-token ids, in the index's id order
    corpus.jsonl  the texts of the documents the entries come from, one JSON string
                  per line: SGLang's own external n-gram corpus format, from which
                  its NGRAM worker builds a suffix automaton. REST drafts from it
                  (He et al. 2024: drafts are the continuations of the longest exact
                  suffix match in a datastore), see ``methods/speculative/rest.py``
    documents.npy int64: for each stored document (line of corpus.jsonl), the entry
                  one past its last, so that an entry's continuation in its document
                  (the entries after it, whose values are the tokens that followed)
                  stops at the document's end, and an entry names its document: NEST
                  copies such spans and says where from (``methods/retrieval/nest.py``)

``build`` is resumable: keys are computed per batch of documents into shards
under ``PATH.partial/``; a rerun with the same arguments continues after the
last finished shard. Nothing here imports SGLang; ``faiss`` does the indexing
and search.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sglang_ilsi.cache import sha256_file

FORMAT = "sglang-ilsi-datastore/1"
CORPUS_SUFFIXES = (".txt", ".md", ".py", ".jsonl")
INDEX_KINDS = ("flat", "ivf", "ivfsq8", "ivfpq")
EXACT_KEYS = ("flat", "ivf")  # kinds that keep the keys themselves (reindex reads them)
META, INDEX, VALUES, CORPUS = "meta.json", "index.faiss", "values.npy", "corpus.jsonl"
DOCUMENTS = "documents.npy"


class DatastoreError(ValueError):
    """A store that cannot be used (missing, corrupt, or built for another model)."""


# -- fingerprints ------------------------------------------------------------------------

def model_fingerprint(model_path: str) -> str:
    """A fingerprint of a model folder's weights and architecture: its
    ``config.json`` (without bookkeeping fields) and, for each weight file, its
    name, size and the bytes of its first and last MiB. Two folders holding the
    same model agree; a retrained or different model does not."""
    root = Path(model_path)
    h = hashlib.sha256()
    cfg_path = root / "config.json"
    if cfg_path.is_file():
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        for key in ("transformers_version", "_name_or_path", "dtype", "torch_dtype"):
            cfg.pop(key, None)
        h.update(json.dumps(cfg, sort_keys=True).encode())
    weights = sorted(p for p in root.iterdir()
                     if p.suffix in (".safetensors", ".bin", ".pt", ".gguf") and p.is_file())
    if not weights:
        raise DatastoreError(f"{model_path}: no weight files to fingerprint")
    for p in weights:
        size = p.stat().st_size
        h.update(f"{p.name}:{size}".encode())
        with open(p, "rb") as f:
            h.update(f.read(1 << 20))
            f.seek(max(0, size - (1 << 20)))
            h.update(f.read(1 << 20))
    return h.hexdigest()[:32]


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A fingerprint of a tokenizer's token → id map and special tokens."""
    vocab = sorted(tokenizer.get_vocab().items())
    special = sorted(str(t) for t in getattr(tokenizer, "all_special_tokens", []))
    blob = json.dumps([vocab, special, getattr(tokenizer, "bos_token_id", None)],
                      ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


# -- the corpus -----------------------------------------------------------------------------

def corpus_files(folder: str | Path) -> list[Path]:
    """Every ``.txt``, ``.md``, ``.py`` and ``.jsonl`` file under ``folder``, in a
    stable order (sorted relative paths)."""
    root = Path(folder)
    if not root.is_dir():
        raise DatastoreError(f"corpus {folder!r}: not a folder")
    return sorted((p for p in root.rglob("*") if p.is_file() and p.suffix in CORPUS_SUFFIXES),
                  key=lambda p: p.relative_to(root).as_posix())


def documents(path: Path) -> Iterator[str]:
    """The documents of one corpus file: the whole text, or one per JSONL line
    (its ``text`` field, or the line itself when it is a JSON string, or an
    example's ``prompt + completion``)."""
    for text, _ in keyed_documents(path):
        yield text


def keyed_documents(path: Path) -> Iterator[tuple[str, int]]:
    """Each document of one corpus file with the character offset its entries
    start from: 0 for text, ``len(prompt)`` for a JSONL example record
    ``{"prompt": ..., "completion": ...}`` (a task example: only the completion's
    tokens become entries, RTD's reference datastore; Shi et al. 2024)."""
    text = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix != ".jsonl":
        if text.strip():
            yield text, 0
        return
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("prompt"), str) \
                and isinstance(record.get("completion"), str):
            if record["completion"].strip():
                yield record["prompt"] + record["completion"], len(record["prompt"])
            continue
        value = record.get("text") if isinstance(record, dict) else record
        if isinstance(value, str) and value.strip():
            yield value, 0


def first_key(encode: Callable[[str], list[int]], text: str, keyed_from: int) -> int:
    """The first position whose next token is an entry: the last token of
    ``text[:keyed_from]`` (the example's prompt), or 0 for a whole document."""
    return max(0, len(encode(text[:keyed_from])) - 1) if keyed_from else 0


# -- building --------------------------------------------------------------------------------

@dataclass(frozen=True)
class BuildOptions:
    layer: int | None = None  # None: the final hidden state (number of layers)
    index: str = "flat"
    nlist: int = 1024  # IVF cells
    nprobe: int = 32  # IVF cells searched per query
    pq_m: int = 16  # IVF-PQ sub-quantizers (must divide the hidden size)
    window: int = 512  # tokens of context per forward
    stride: int = 256  # new tokens per further window of a long document
    max_entries: int | None = None
    shard_docs: int = 16  # documents per resumable shard
    batch_windows: int = 4

    def check(self) -> None:
        if self.index not in INDEX_KINDS:
            raise DatastoreError(f"index: expected one of {INDEX_KINDS}, got {self.index!r}")
        if self.window < 2 or not 1 <= self.stride < self.window:
            raise DatastoreError("window must be at least 2 and stride between 1 and window - 1")
        if self.max_entries is not None and self.max_entries < 1:
            raise DatastoreError("max_entries must be positive")


def windows(ids: Sequence[int], window: int, stride: int) -> Iterator[tuple[int, int, int]]:
    """``(start, end, first_key)`` spans covering a document: each forward reads
    ``ids[start:end]`` (at most ``window`` tokens) and emits keys for positions
    ``first_key..end-2`` (the last position has no next token). The first window
    emits up to ``window - 1`` keys, each later one ``stride`` keys with at least
    ``window - stride - 1`` tokens of context before them; every position but the
    document's last gets exactly one key."""
    n = len(ids)
    if n < 2:
        return
    end = min(window, n)
    yield 0, end, 0
    while end < n:
        first = end - 1
        end = min(first + stride + 1, n)
        yield max(0, end - window), end, first


class KeyEncoder:
    """Hidden states of one layer for token windows, with transformers on the CPU."""

    def __init__(self, model_path: str, layer: int | None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
        config = self.model.config.get_text_config()
        self.num_layers = int(config.num_hidden_layers)
        self.hidden_size = int(config.hidden_size)
        self.vocab_size = int(config.vocab_size)
        self.layer = self.num_layers if layer is None else int(layer)
        if not 0 <= self.layer <= self.num_layers:
            raise DatastoreError(f"layer {self.layer}: this model has layers 0..{self.num_layers}")

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text)["input_ids"])

    def keys(self, batch: Sequence[Sequence[int]]) -> list[np.ndarray]:
        """``[len(ids), hidden]`` float32 keys of each token window (right-padded batch)."""
        torch = self.torch
        longest = max(len(ids) for ids in batch)
        input_ids = torch.zeros(len(batch), longest, dtype=torch.long)
        mask = torch.zeros(len(batch), longest, dtype=torch.long)
        for i, ids in enumerate(batch):
            input_ids[i, :len(ids)] = torch.tensor(list(ids))
            mask[i, :len(ids)] = 1
        with torch.inference_mode():
            out = self.model.base_model(input_ids=input_ids, attention_mask=mask,
                                   output_hidden_states=True)
        hidden = out.hidden_states[self.layer].float()
        return [hidden[i, :len(ids)].numpy().astype(np.float32) for i, ids in enumerate(batch)]


def _atomic_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)


def _progress(total: int, desc: str, quiet: bool) -> Any:
    if quiet:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="tok", dynamic_ncols=True)


def build(corpus: str, model_path: str, out: str, options: BuildOptions = BuildOptions(),
          quiet: bool = False, force: bool = False,
          on_shard: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Build the store for ``model_path`` from the ``corpus`` folder at ``out``;
    return its ``meta.json``. Resumable (see the module docstring); ``force``
    replaces an existing store."""
    options.check()
    target = Path(out)
    if target.exists() and not force:
        raise DatastoreError(f"{out} exists; pass --force to replace it")
    files = corpus_files(corpus)
    if not files:
        raise DatastoreError(f"corpus {corpus!r}: no {', '.join(CORPUS_SUFFIXES)} files")
    encoder = KeyEncoder(model_path, options.layer)
    root = Path(corpus)
    docs: list[tuple[str, list[int], int]] = []
    texts: list[str] = []
    for path in files:
        for j, (text, keyed_from) in enumerate(keyed_documents(path)):
            docs.append((f"{path.relative_to(root).as_posix()}#{j}", encoder.encode(text),
                         first_key(encoder.encode, text, keyed_from)))
            texts.append(text)
    work = target.with_name(target.name + ".partial")
    plan = {
        "format": FORMAT, "model_fingerprint": model_fingerprint(model_path),
        "tokenizer_fingerprint": tokenizer_fingerprint(encoder.tokenizer),
        "layer": encoder.layer, "window": options.window, "stride": options.stride,
        "max_entries": options.max_entries, "shard_docs": options.shard_docs,
        "shard_files": ["keys", "values", "documents"],
        "documents": hashlib.sha256("\n".join(
            f"{name}:{first}:{hashlib.sha256(str(ids).encode()).hexdigest()}"
            for name, ids, first in docs
        ).encode()).hexdigest(),
    }
    work.mkdir(parents=True, exist_ok=True)
    plan_path = work / "plan.json"
    if plan_path.is_file() and json.loads(plan_path.read_text()) != plan:
        shutil.rmtree(work)  # another model, corpus or window: the shards are not ours
        work.mkdir(parents=True)
    _atomic_json(plan_path, plan)
    done = _finished_shards(work)
    shards = [docs[i:i + options.shard_docs] for i in range(0, len(docs), options.shard_docs)]
    budget = options.max_entries
    entries = sum(int(np.load(work / f"shard-{i:05d}.values.npy", mmap_mode="r").shape[0])
                  for i in range(len(shards)) if i in done)
    total = sum(max(0, len(ids) - 1 - first) for _, ids, first in docs)
    if budget is not None:
        total = min(total, budget)
    bar = _progress(total, "datastore build", quiet)
    if bar is not None:
        bar.update(min(entries, total))
    tick = bar.update if bar is not None else (lambda n: None)
    for i, shard in enumerate(shards):
        if i in done:
            continue
        if budget is not None and entries >= budget:
            break
        keys, values, counts = _shard_entries(encoder, shard, options,
                                              None if budget is None else budget - entries,
                                              tick)
        np.save(work / f"shard-{i:05d}.keys.npy", keys)
        np.save(work / f"shard-{i:05d}.values.npy", values)
        np.save(work / f"shard-{i:05d}.documents.npy", counts)
        (work / f"shard-{i:05d}.done").write_text("ok")
        entries += len(values)
        if on_shard is not None:
            on_shard(i)
    if bar is not None:
        bar.close()
    order = [i for i in range(len(shards)) if (work / f"shard-{i:05d}.done").is_file()]
    keys = np.concatenate([np.load(work / f"shard-{i:05d}.keys.npy") for i in order])
    values = np.concatenate([np.load(work / f"shard-{i:05d}.values.npy") for i in order])
    counts = np.concatenate([np.load(work / f"shard-{i:05d}.documents.npy") for i in order])
    document_ends = np.cumsum(counts).astype(np.int64)  # one per stored document
    if len(values) == 0:
        raise DatastoreError(f"corpus {corpus!r}: no token has a successor")
    used = [texts[j] for i in order
            for j in range(i * options.shard_docs, min((i + 1) * options.shard_docs, len(docs)))]
    index, recall = make_index(keys, options)
    meta = {
        "format": FORMAT,
        "model": {"path": os.path.abspath(model_path), "fingerprint": plan["model_fingerprint"],
                  "architecture": type(encoder.model).__name__,
                  "num_layers": encoder.num_layers, "hidden_size": encoder.hidden_size,
                  "vocab_size": encoder.vocab_size},
        "tokenizer_fingerprint": plan["tokenizer_fingerprint"],
        "layer": encoder.layer,
        "entries": int(len(values)),
        "index": index_meta(options, len(values), recall),
        "corpus": {"path": os.path.abspath(corpus), "files": len(files), "documents": len(docs),
                   "examples": sum(1 for _, _, first in docs if first > 0),
                   "window": options.window, "stride": options.stride,
                   "stored_documents": len(used), "stored_chars": sum(map(len, used))},
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    _write_store(target, index, values.astype(np.int32), document_ends, used, meta, force)
    shutil.rmtree(work, ignore_errors=True)
    return meta


def _finished_shards(work: Path) -> set[int]:
    return {int(p.name[len("shard-"):len("shard-") + 5]) for p in work.glob("shard-*.done")}


def _shard_entries(encoder: KeyEncoder, shard: list[tuple[str, list[int], int]],
                   options: BuildOptions, budget: int | None,
                   tick: Callable[[int], Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The shard's keys and values, and how many entries each of its documents gave."""
    # an example's window keeps only the positions from its prompt's last token on
    jobs = [(d, ids, start, end, max(first, keyed)) for d, (_, ids, keyed) in enumerate(shard)
            for start, end, first in windows(ids, options.window, options.stride)
            if end - 1 > keyed]
    keys: list[np.ndarray] = []
    values: list[np.ndarray] = []
    owners: list[np.ndarray] = []
    count = 0
    for b in range(0, len(jobs), options.batch_windows):
        group = jobs[b:b + options.batch_windows]
        hidden = encoder.keys([ids[start:end] for _, ids, start, end, _ in group])
        for (doc, ids, start, end, first), h in zip(group, hidden):
            # positions first..end-2 of the document: rows first-start.. of this window
            keys.append(h[first - start:end - 1 - start])
            values.append(np.asarray(ids[first + 1:end], dtype=np.int32))
            owners.append(np.full(end - 1 - first, doc, dtype=np.int64))
            new = end - 1 - first
            tick(new if budget is None else max(0, min(new, budget - count)))
            count += new
        if budget is not None and count >= budget:
            break
    k = np.concatenate(keys) if keys else np.zeros((0, encoder.hidden_size), np.float32)
    v = np.concatenate(values) if values else np.zeros((0,), np.int32)
    owner = np.concatenate(owners) if owners else np.zeros((0,), np.int64)
    if budget is not None:
        k, v, owner = k[:budget], v[:budget], owner[:budget]
    counts = np.bincount(owner, minlength=len(shard)).astype(np.int64)
    return np.ascontiguousarray(k, dtype=np.float32), v, counts


def index_meta(options: BuildOptions, entries: int, recall: dict[str, Any] | None
               ) -> dict[str, Any]:
    """``meta.json``'s ``index``: its kind, IVF cells and probes, PQ size, recall."""
    return {"kind": options.index,
            **({"nlist": _nlist(options, entries), "nprobe": options.nprobe}
               if options.index != "flat" else {}),
            **({"pq_m": options.pq_m} if options.index == "ivfpq" else {}),
            "recall": recall}


def reindex(source: str, out: str, options: BuildOptions, force: bool = False
            ) -> dict[str, Any]:
    """A copy of the store at ``source`` with another faiss index over the same keys,
    without a forward pass: the keys are read back from a store that keeps them
    (``flat`` or ``ivf``), and the values, document ends and corpus are copied. For
    trying another index kind, cell count or probe count on a large store in
    minutes instead of a rebuild."""
    import faiss

    options.check()
    target = Path(out)
    if target.exists() and not force:
        raise DatastoreError(f"{out} exists; pass --force to replace it")
    meta = verify(source)
    kind = meta["index"]["kind"]
    if kind not in EXACT_KEYS:
        raise DatastoreError(f"{source}: a {kind} index keeps only compressed keys; reindex a "
                             f"{' or '.join(EXACT_KEYS)} store, or rebuild from the corpus")
    if DOCUMENTS not in meta.get("files", {}) or CORPUS not in meta.get("files", {}):
        raise DatastoreError(f"{source} was built by an older sglang-ilsi; rebuild it with "
                             "`sglang-ilsi datastore build`")
    index = faiss.read_index(str(Path(source) / INDEX))
    if kind != "flat":
        faiss.extract_index_ivf(index).make_direct_map()
    keys = index.reconstruct_n(0, index.ntotal)
    new_index, recall = make_index(np.ascontiguousarray(keys, dtype=np.float32), options)
    with open(Path(source) / CORPUS, encoding="utf-8") as f:
        texts = [json.loads(line) for line in f]
    new_meta = {key: value for key, value in meta.items() if key not in ("files", "index")}
    new_meta.update(index=index_meta(options, int(meta["entries"]), recall),
                    reindexed_from={"path": os.path.abspath(source), "index": meta["index"]},
                    built_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    _write_store(target, new_index, np.load(Path(source) / VALUES),
                 np.load(Path(source) / DOCUMENTS), texts, new_meta, force)
    return new_meta


def _nlist(options: BuildOptions, n: int) -> int:
    # faiss wants about 39 training points per cell; fewer cells for small stores
    return max(1, min(options.nlist, n // 39))


def make_index(keys: np.ndarray, options: BuildOptions) -> tuple[Any, dict[str, Any] | None]:
    """The faiss index over ``keys`` and, for approximate kinds, its measured
    recall: the share of the exact (flat) top-k neighbours it returns for a
    sample of the stored keys used as queries."""
    import faiss

    d = keys.shape[1]
    if options.index == "flat":
        index = faiss.IndexFlatL2(d)
        index.add(keys)
        return index, None
    nlist = _nlist(options, len(keys))
    codes = {"ivf": "Flat", "ivfsq8": "SQ8", "ivfpq": f"PQ{options.pq_m}"}[options.index]
    spec = f"IVF{nlist},{codes}"
    if options.index == "ivfpq" and d % options.pq_m:
        raise DatastoreError(f"pq_m {options.pq_m} must divide the hidden size {d}")
    index = faiss.index_factory(d, spec, faiss.METRIC_L2)
    rng = np.random.default_rng(0)
    train = keys[rng.choice(len(keys), size=min(len(keys), 256 * nlist), replace=False)]
    index.train(train)
    index.add(keys)
    index.nprobe = options.nprobe
    queries = keys[rng.choice(len(keys), size=min(len(keys), 500), replace=False)]
    k = min(64, len(keys))
    exact = faiss.IndexFlatL2(d)
    exact.add(keys)
    _, truth = exact.search(queries, k)
    _, found = index.search(queries, k)
    hits = sum(len(set(t.tolist()) & set(f.tolist())) for t, f in zip(truth, found))
    recall = {"k": k, "queries": len(queries), "recall_at_k": round(hits / truth.size, 4)}
    return index, recall


def _write_store(target: Path, index: Any, values: np.ndarray, document_ends: np.ndarray,
                 texts: list[str], meta: dict[str, Any], force: bool) -> None:
    import faiss

    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    faiss.write_index(index, str(tmp / INDEX))
    np.save(tmp / VALUES, values)
    np.save(tmp / DOCUMENTS, document_ends)
    with open(tmp / CORPUS, "w", encoding="utf-8") as f:
        for text in texts:
            f.write(json.dumps(text) + "\n")
    meta["files"] = {name: {"bytes": (tmp / name).stat().st_size, "sha256": sha256_file(tmp / name)}
                     for name in (INDEX, VALUES, CORPUS, DOCUMENTS)}
    _atomic_json(tmp / META, meta)
    if target.exists():
        if not force:
            shutil.rmtree(tmp)
            raise DatastoreError(f"{target} appeared while building; not replaced")
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.rename(target, old)
        os.rename(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, target)


# -- reading ---------------------------------------------------------------------------------

def read_meta(path: str) -> dict[str, Any]:
    meta_path = Path(path) / META
    if not meta_path.is_file():
        raise DatastoreError(f"{path}: not a datastore (no {META}; build one with "
                             "`sglang-ilsi datastore build`)")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatastoreError(f"{path}: {META} is corrupt ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise DatastoreError(f"{path}: unknown datastore format "
                             f"{meta.get('format') if isinstance(meta, dict) else meta!r}, "
                             f"expected {FORMAT}")
    return meta


def verify(path: str, model_path: str | None = None, checksums: bool = True) -> dict[str, Any]:
    """Check a store before use; return its meta. Raises :class:`DatastoreError`
    saying what is wrong: missing or corrupt files (size and sha256 against
    ``meta.json``), or, given ``model_path``, a store built for another model or
    tokenizer."""
    meta = read_meta(path)
    for name, expected in meta.get("files", {}).items():
        file = Path(path) / name
        if not file.is_file():
            raise DatastoreError(f"{path}: {name} is missing")
        if file.stat().st_size != expected["bytes"]:
            raise DatastoreError(f"{path}: {name} is corrupt (size {file.stat().st_size}, "
                                 f"expected {expected['bytes']})")
        if checksums and sha256_file(file) != expected["sha256"]:
            raise DatastoreError(f"{path}: {name} is corrupt (sha256 differs from {META})")
    if model_path is not None:
        check_model(meta, path, model_path)
    return meta


def rest_corpus(path: str) -> str:
    """The store's ``corpus.jsonl`` (the store checked whole), for REST drafts.
    Any model may draft from it: SGLang tokenizes the texts with the served
    model's tokenizer. A store without one is refused."""
    meta = verify(path)
    if CORPUS not in meta.get("files", {}):
        raise DatastoreError(f"{path} has no {CORPUS} (built by an older sglang-ilsi); "
                             "rebuild it with `sglang-ilsi datastore build`")
    return os.path.abspath(Path(path) / CORPUS)


def check_model(meta: dict[str, Any], path: str, model_path: str) -> None:
    from transformers import AutoTokenizer

    tok = tokenizer_fingerprint(AutoTokenizer.from_pretrained(model_path))
    built_for = meta["model"]["path"]
    if tok != meta["tokenizer_fingerprint"]:
        raise DatastoreError(f"{path} was built for another tokenizer (model {built_for}); "
                             f"its token ids do not mean the same as {model_path}'s")
    if model_fingerprint(model_path) != meta["model"]["fingerprint"]:
        raise DatastoreError(f"{path} was built for another model ({built_for}, fingerprint "
                             f"{meta['model']['fingerprint']}); its keys are that model's "
                             f"hidden states, not {model_path}'s. Rebuild it for this model")


def check_spans(meta: dict[str, Any], path: str) -> None:
    """Refuse span copying from a store that does not know its documents' ends."""
    if DOCUMENTS not in meta.get("files", {}):
        raise DatastoreError(f"{path} has no {DOCUMENTS} (built by an older sglang-ilsi), "
                             "so spans cannot be copied from it; rebuild it with "
                             "`sglang-ilsi datastore build`")


def check_heads(meta: dict[str, Any], heads: int) -> None:
    """Refuse a multi-head search a store cannot answer exactly."""
    if heads == 1:
        return
    if meta["index"]["kind"] != "flat":
        raise DatastoreError(f"a multi-head search needs a flat store; this one is "
                             f"{meta['index']['kind']}")
    dim = int(meta["model"]["hidden_size"])
    if dim % heads:
        raise DatastoreError(f"{heads} heads do not divide the keys' size {dim}")


class Store:
    """A loaded store: ``search`` answers a batch of queries at once."""

    def __init__(self, path: str, model_path: str | None = None, checksums: bool = True):
        import faiss

        self.path = path
        self.meta = verify(path, model_path, checksums)
        try:
            self.index = faiss.read_index(str(Path(path) / INDEX))
            self.values = np.load(Path(path) / VALUES)
        except Exception as e:  # faiss raises RuntimeError on a bad file
            raise DatastoreError(f"{path}: cannot read the store ({e})") from None
        if self.index.ntotal != len(self.values) or len(self.values) != self.meta["entries"]:
            raise DatastoreError(f"{path}: index holds {self.index.ntotal} keys, values "
                                 f"{len(self.values)}, meta says {self.meta['entries']}")
        if "nprobe" in self.meta["index"]:
            faiss.extract_index_ivf(self.index).nprobe = int(self.meta["index"]["nprobe"])
        self.layer = int(self.meta["layer"])
        self.dim = int(self.index.d)
        # where each document's entries end (None: a store built before documents.npy)
        self.document_ends = (np.load(Path(path) / DOCUMENTS)
                              if DOCUMENTS in self.meta.get("files", {}) else None)
        self._heads: dict[int, list[Any]] = {}  # heads → the exact index of each key slice

    def head_search(self, queries: np.ndarray, k: int, heads: int
                    ) -> tuple[np.ndarray, np.ndarray]:
        """Multi-head search (MH-RTD, Shi et al. 2024): the queries and the stored
        keys cut into ``heads`` equal slices, each slice searched in its own
        exact index of the keys' slices: ``(squared L2 distances, next-token
        ids)``, each ``[n, heads, k']``, nearest first within a head. Only for a
        flat store (its keys are exact); the slice indexes are built on first use."""
        import faiss

        if heads == 1:
            dist, tokens = self.search(queries, k)
            return dist[:, None, :], tokens[:, None, :]
        check_heads(self.meta, heads)
        width = self.dim // heads
        if heads not in self._heads:
            keys = self.index.reconstruct_n(0, self.index.ntotal)
            parts = []
            for h in range(heads):
                part = faiss.IndexFlatL2(width)
                part.add(np.ascontiguousarray(keys[:, h * width:(h + 1) * width]))
                parts.append(part)
            self._heads[heads] = parts
        k = min(int(k), len(self.values))
        queries = np.asarray(queries, dtype=np.float32)
        dists, tokens = [], []
        for h, part in enumerate(self._heads[heads]):
            d, ids = part.search(np.ascontiguousarray(queries[:, h * width:(h + 1) * width]), k)
            dists.append(d)
            tokens.append(self.values[ids])
        return (np.stack(dists, axis=1).astype(np.float32),
                np.stack(tokens, axis=1).astype(np.int64))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """One faiss search for all ``queries`` ``[n, d]``: ``(squared L2
        distances, next-token ids)``, each ``[n, k']`` with ``k' = min(k, entries)``,
        nearest first."""
        dist, tokens, _ = self.search_entries(queries, k)
        return dist, tokens

    def search_entries(self, queries: np.ndarray, k: int
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`search`, and the neighbours' entry numbers (−1: none found)."""
        k = min(int(k), len(self.values))
        dist, ids = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
        found = ids >= 0
        tokens = np.where(found, self.values[np.clip(ids, 0, None)], -1)
        dist = np.where(found, dist, np.inf)
        return dist.astype(np.float32), tokens.astype(np.int64), ids.astype(np.int64)

    def documents_of(self, entries: np.ndarray) -> np.ndarray:
        """The stored document (its line in corpus.jsonl) of each entry number; −1 for
        entry −1."""
        if self.document_ends is None:
            raise DatastoreError(f"{self.path} has no {DOCUMENTS} (built by an older "
                                 "sglang-ilsi); rebuild it with `sglang-ilsi datastore build`")
        entries = np.asarray(entries, dtype=np.int64)
        found = np.clip(np.searchsorted(self.document_ends, entries, side="right"),
                        0, len(self.document_ends) - 1)
        return np.where(entries >= 0, found, -1)

    def continuations(self, entries: np.ndarray, length: int) -> np.ndarray:
        """For each entry number (any shape), its document (:meth:`documents_of`) and
        then the ``length`` tokens that followed its value in that document: the
        values of the entries after it, −1 past the document's end (or for entry −1).
        Shape ``entries.shape + (1 + length,)``."""
        entries = np.asarray(entries, dtype=np.int64)
        documents = self.documents_of(entries)
        ends = self.document_ends[np.clip(documents, 0, None)]
        following = entries[..., None] + np.arange(1, length + 1, dtype=np.int64)
        inside = (entries[..., None] >= 0) & (following < ends[..., None])
        tokens = np.where(inside, self.values[np.clip(following, 0, len(self.values) - 1)], -1)
        return np.concatenate([documents[..., None], tokens], axis=-1)


def describe(meta: dict[str, Any], path: str) -> list[str]:
    """``datastore info``'s lines."""
    size = sum(f["bytes"] for f in meta.get("files", {}).values())
    index = meta["index"]
    lines = [
        f"store:      {path}",
        f"size:       {size / 2**20:.1f} MiB",
        f"entries:    {meta['entries']}",
        f"model:      {meta['model']['path']} ({meta['model']['architecture']}, "
        f"{meta['model']['num_layers']} layers, hidden {meta['model']['hidden_size']}, "
        f"fingerprint {meta['model']['fingerprint']})",
        f"layer:      {meta['layer']}" + (" (final hidden state, after the final norm)"
                                          if meta["layer"] == meta["model"]["num_layers"]
                                          else " (residual stream after that many layers)"),
        f"tokenizer:  {meta['tokenizer_fingerprint']}",
        "index:      " + ", ".join(f"{k}={v}" for k, v in index.items() if k != "recall"),
    ]
    if index.get("recall"):
        r = index["recall"]
        lines.append(f"recall:     {r['recall_at_k']:.4f} of the exact top-{r['k']} "
                     f"({r['queries']} stored keys as queries)")
    if meta.get("reindexed_from"):
        source = meta["reindexed_from"]
        lines.append(f"reindexed:  from {source['path']} ({source['index']['kind']} index), "
                     "the same keys")
    corpus = meta.get("corpus", {})
    lines.append(f"corpus:     {corpus.get('path')} ({corpus.get('files')} files, "
                 f"{corpus.get('documents')} documents"
                 + (f", {corpus['examples']} of them task examples keyed on their completions"
                    if corpus.get("examples") else "")
                 + f"; window {corpus.get('window')}, "
                 f"stride {corpus.get('stride')})")
    if CORPUS in meta.get("files", {}):
        lines.append(f"REST text:  {CORPUS} ({corpus.get('stored_documents')} documents, "
                     f"{corpus.get('stored_chars')} characters)")
    lines.append(f"built:      {meta.get('built_at')}")
    return lines
