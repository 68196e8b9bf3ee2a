"""NEST's Algorithm 1 (greedy; Li et al. 2024) with transformers and faiss, written
from the paper, independent of ``sglang_ilsi.datastore`` and the ``nest`` method:
the hidden state from transformers' ``hidden_states``, one faiss search in the
store's own index file, the relative retrieval confidence, the mixture, span
selection from the nearest neighbour whose next token was chosen, and the relaxed
verification of each span token at its own position."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch


class NestReference:
    def __init__(self, hf, store_path: str):
        import faiss

        self.hf = hf
        root = Path(store_path)
        self.index = faiss.read_index(str(root / "index.faiss"))
        self.values = np.load(root / "values.npy")
        self.document_ends = np.load(root / "documents.npy")
        meta = json.loads((root / "meta.json").read_text())
        self.layer, self.dim = meta["layer"], meta["model"]["hidden_size"]
        with open(root / "corpus.jsonl", encoding="utf-8") as f:
            self.documents = [json.loads(line) for line in f]  # one per stored document

    @torch.no_grad()
    def mixture(self, ids: Sequence[int], k: int, temperature: float, alpha: float,
                tau: float) -> tuple[np.ndarray, float, np.ndarray]:
        """(p_M, λ_t, neighbour entry numbers nearest first) after ``ids``."""
        out = self.hf.model(torch.tensor([list(ids)]), output_hidden_states=True)
        hidden = out.hidden_states[self.layer][0, -1].float().numpy()
        logits = out.logits[0, -1].double().numpy()
        dist, idx = self.index.search(hidden[None].astype(np.float32), k)
        d = dist[0].astype(np.float64)
        w = np.exp(-(d - d.min()) / (temperature or self.dim))
        w /= w.sum()
        p_knn = np.zeros(logits.shape[0])
        np.add.at(p_knn, self.values[idx[0]], w)
        p_lm = np.exp(logits - logits.max())
        p_lm /= p_lm.sum()
        ratio = d.min() / d.max() if d.max() > 0 else 0.0
        lam = 1.0 / (1.0 + math.exp(-(ratio - alpha) / tau))
        return lam * p_lm + (1 - lam) * p_knn, lam, idx[0]

    def document_of(self, entry: int) -> int:
        """The stored document (line of corpus.jsonl) holding ``entry``."""
        return int(np.searchsorted(self.document_ends, entry, side="right"))

    def ngram_after(self, entry: int, length: int) -> list[int]:
        """The ``length`` tokens after entry's value, within its document."""
        end = int(self.document_ends[self.document_of(entry)])
        return [int(t) for t in self.values[entry + 1:min(entry + 1 + length, end)]]

    def greedy(self, prompt_ids: Sequence[int], n: int, k: int, temperature: float = 0.0,
               alpha: float = 0.3, tau: float = 0.1, delta: float = 0.5, span: int = 16,
               gamma: float = 0.05) -> tuple[list[int], int, list[list[int]]]:
        """Algorithm 1: the tokens, how many came from accepted span tokens, and each
        span's ``[first output position, document, tokens]`` (its first token is the
        step's own choice, the neighbour's next token)."""
        out: list[int] = []
        copied = 0
        sources: list[list[int]] = []

        def step() -> tuple[np.ndarray, float, np.ndarray]:
            return self.mixture(list(prompt_ids) + out, k, temperature, alpha, tau)

        def ended() -> bool:
            return len(out) >= n or bool(out) and out[-1] in self.hf.eos_ids

        while not ended():
            p_mixed, lam, entries = step()
            chosen = int(np.argmax(p_mixed))
            out.append(chosen)
            if ended() or lam > delta or span == 1:
                continue
            nearest = next((int(e) for e in entries if self.values[e] == chosen), None)
            ngram = self.ngram_after(nearest, span - 1) if nearest is not None else []
            if ngram:
                sources.append([len(out) - 1, self.document_of(nearest), 1])
            for token in ngram:
                p_mixed, _, _ = step()
                if min(1.0, p_mixed[token] / (gamma * p_mixed.max())) > 0.5:
                    out.append(token)
                    copied += 1
                    sources[-1][2] += 1
                else:
                    out.append(int(np.argmax(p_mixed)))
                    break
                if ended():
                    break
        return out, copied, sources
