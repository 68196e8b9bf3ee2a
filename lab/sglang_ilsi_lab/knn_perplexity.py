"""kNN-LM's effect on held-out perplexity (Khandelwal et al. 2020: Wikitext-103
18.65 → 16.12), offline, on a corpus every machine ships: the CPython standard
library's own sources.

The stdlib files of a few packages are split by a hash of their path into store
(80%), validation (10%) and test (10%) files, so the held-out splits are
disjoint from the store by construction. The store is built by
``sglang_ilsi.datastore.build`` (what ``sglang-ilsi datastore build`` runs);
each held-out token is scored by the plain model and by kNN-LM, whose p_kNN comes
from ``sglang_ilsi.methods.retrieval.knn_lm.knn_distribution`` over the store's
own faiss search (``Store.search``): the server's code, teacher-forced here,
because the server's logits stage scores only the tokens it samples. λ and the
temperature are chosen on the validation files; the test files give the result,
with a bootstrap CI over 128-token blocks.

    python -m sglang_ilsi_lab.knn_perplexity --model smollm2-135m-instruct \
        --out bench-runs/knn-lm-perplexity
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sysconfig
import time
from pathlib import Path

import numpy as np
import torch

from sglang_ilsi import datastore
from sglang_ilsi.methods.retrieval.knn_lm import knn_distribution

# Two packages (about 210k SmolLM2 tokens): the store holds every token of their
# store files, so held-out files meet the same code base (the paper's in-domain setting).
PACKAGES = ("asyncio", "email")
LAMBDAS = (0.01, 0.02, 0.05, 0.1, 0.25, 0.4, 0.6)
TEMPERATURES = (1.0, 10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0, 10000.0)
BLOCK = 128


def split_files(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, list[Path]]:
    """store / validation / test, by a hash of each file's path under the stdlib."""
    out: dict[str, list[Path]] = {"store": [], "validation": [], "test": []}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            if "test" in path.relative_to(root).parts[1:-1]:
                continue
            bucket = int(hashlib.sha256(path.relative_to(root).as_posix().encode())
                         .hexdigest()[:8], 16) % 10
            out["test" if bucket == 0 else "validation" if bucket == 1 else "store"].append(path)
    return out


def _link_corpus(files: list[Path], root: Path, folder: Path) -> None:
    for path in files:
        target = folder / path.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            target.symlink_to(path)


@torch.no_grad()
def score(files: list[Path], model, tokenizer, store: datastore.Store, k: int,
          max_tokens: int, window: int = 512, stride: int = 256) -> dict[str, np.ndarray]:
    """Per held-out token: log p_LM(next) and the k neighbours of its context."""
    lm, dists, toks, nexts = [], [], [], []
    count = 0
    for path in files:
        ids = tokenizer(path.read_text(encoding="utf-8", errors="replace"))["input_ids"]
        for start, end, first in datastore.windows(ids, window, stride):
            out = model(torch.tensor([ids[start:end]]), output_hidden_states=True)
            rows = slice(first - start, end - 1 - start)
            logp = torch.log_softmax(out.logits[0, rows].double(), -1)
            nxt = torch.tensor(ids[first + 1:end])
            hidden = out.hidden_states[store.layer][0, rows].float().numpy()
            d, t = store.search(hidden, k)
            lm.append(logp.gather(1, nxt[:, None])[:, 0].numpy())
            dists.append(d)
            toks.append(t)
            nexts.append(nxt.numpy())
            count += len(nxt)
            if count >= max_tokens:
                break
        if count >= max_tokens:
            break
    return {"lm": np.concatenate(lm)[:max_tokens], "dist": np.concatenate(dists)[:max_tokens],
            "tok": np.concatenate(toks)[:max_tokens], "next": np.concatenate(nexts)[:max_tokens]}


def knn_logp(scored: dict[str, np.ndarray], k: int, temperature: float, vocab: int) -> np.ndarray:
    """log p_kNN(next) per token, with the method's own p_kNN."""
    out = np.empty(len(scored["next"]))
    for i in range(len(out)):
        p = knn_distribution(torch.from_numpy(scored["dist"][i]),
                             torch.from_numpy(scored["tok"][i]), k, temperature, vocab)
        out[i] = float(p[int(scored["next"][i])])
    with np.errstate(divide="ignore"):
        return np.log(out)


def mixed_nll(lm: np.ndarray, knn: np.ndarray, lam: float) -> np.ndarray:
    return -np.logaddexp(np.log(lam) + knn, np.log1p(-lam) + lm)


def block_bootstrap(nll_a: np.ndarray, nll_b: np.ndarray, seed: int = 0,
                    resamples: int = 2000) -> dict[str, float]:
    """PPL(a) − PPL(b) with a 95% bootstrap CI over contiguous blocks of tokens."""
    n = len(nll_a) // BLOCK * BLOCK
    a = nll_a[:n].reshape(-1, BLOCK).sum(1)
    b = nll_b[:n].reshape(-1, BLOCK).sum(1)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(a), size=(resamples, len(a)))
    diffs = np.exp(a[picks].sum(1) / (BLOCK * len(a))) - np.exp(b[picks].sum(1) / (BLOCK * len(a)))
    return {"diff": float(np.exp(a.sum() / n) - np.exp(b.sum() / n)),
            "ci_low": float(np.quantile(diffs, 0.025)), "ci_high": float(np.quantile(diffs, 0.975)),
            "blocks": int(len(a)), "tokens": int(n)}


def main(argv: list[str] | None = None) -> int:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sglang_ilsi_lab.models import catalog

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--out", default="bench-runs/knn-lm-perplexity")
    p.add_argument("--store-tokens", type=int, default=None, help="cap (default: all)")
    p.add_argument("--packages", default=",".join(PACKAGES), help="stdlib packages")
    p.add_argument("--eval-tokens", type=int, default=4096, help="per held-out split")
    p.add_argument("--k", type=int, default=64)
    ns = p.parse_args(argv)
    model_path = str(catalog.prepare(ns.model)) if not Path(ns.model).is_dir() else ns.model
    out = Path(ns.out)
    out.mkdir(parents=True, exist_ok=True)
    root = Path(sysconfig.get_paths()["stdlib"])
    packages = tuple(ns.packages.split(","))
    splits = split_files(root, packages)
    corpus = out / "store-corpus"
    _link_corpus(splits["store"], root, corpus)
    store_path = out / "store"
    started = time.time()
    if not store_path.exists():
        datastore.build(str(corpus), model_path, str(store_path),
                        datastore.BuildOptions(max_entries=ns.store_tokens))
    build_s = time.time() - started
    store = datastore.Store(str(store_path), model_path)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
    vocab = int(model.config.get_text_config().vocab_size)
    val = score(splits["validation"], model, tokenizer, store, ns.k, ns.eval_tokens)
    test = score(splits["test"], model, tokenizer, store, ns.k, ns.eval_tokens)
    np.savez(out / "scored.npz", **{f"val_{k}": v for k, v in val.items()},
             **{f"test_{k}": v for k, v in test.items()})
    grid = []
    for t in TEMPERATURES:
        knn = knn_logp(val, ns.k, t, vocab)
        for lam in LAMBDAS:
            grid.append((float(np.exp(mixed_nll(val["lm"], knn, lam).mean())), lam, t))
    best_ppl, lam, t = min(grid)
    test_knn = mixed_nll(test["lm"], knn_logp(test, ns.k, t, vocab), lam)
    test_lm = -test["lm"]
    result = {
        "model": ns.model, "store": {"entries": store.meta["entries"], "files":
                                     len(splits["store"]), "build_s": round(build_s, 1)},
        "split": {name: len(files) for name, files in splits.items()},
        "packages": list(packages), "k": ns.k,
        "nearest_distance_median": float(np.median(test["dist"][:, 0])),
        "grid": [{"validation_ppl": g[0], "lambda": g[1], "knn_temperature": g[2]} for g in grid],
        "chosen_on_validation": {"lambda": lam, "knn_temperature": t,
                                 "validation_ppl_knn": best_ppl,
                                 "validation_ppl_lm": float(np.exp(-val["lm"].mean()))},
        "test": {"ppl_lm": float(np.exp(test_lm.mean())), "ppl_knn_lm": float(np.exp(
            test_knn.mean())), "knn_minus_lm": block_bootstrap(test_knn, test_lm)},
        "published": "Khandelwal et al. 2020, Wikitext-103 test perplexity 18.65 -> 16.12",
    }
    (out / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
