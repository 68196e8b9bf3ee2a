"""kNN-LM with transformers and faiss, written from the paper (Khandelwal et al.
2020), independent of ``sglang_ilsi.datastore`` and the ``knn_lm`` method: the
hidden state at the store's layer from transformers' ``hidden_states``, one faiss
search in the store's own index file, p = λ·p_kNN + (1−λ)·p_LM."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch


class KnnReference:
    def __init__(self, hf, store_path: str):
        import faiss

        self.hf = hf
        root = Path(store_path)
        self.index = faiss.read_index(str(root / "index.faiss"))
        self.values = np.load(root / "values.npy")
        self.layer = json.loads((root / "meta.json").read_text())["layer"]

    @torch.no_grad()
    def hidden_and_logits(self, ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        out = self.hf.model(torch.tensor([list(ids)]), output_hidden_states=True)
        return (out.hidden_states[self.layer][0, -1].float().numpy(),
                out.logits[0, -1].double().numpy())

    def logprobs(self, ids: Sequence[int], k: int, temperature: float,
                 lam: float) -> tuple[np.ndarray, np.ndarray]:
        """(log p_LM, log p_kNN-LM) of the next token after ``ids``."""
        hidden, logits = self.hidden_and_logits(ids)
        dist, idx = self.index.search(hidden[None].astype(np.float32), k)
        d = dist[0].astype(np.float64)
        w = np.exp(-(d - d.min()) / temperature)
        w /= w.sum()
        p_knn = np.zeros(logits.shape[0])
        np.add.at(p_knn, self.values[idx[0]], w)
        p_lm = np.exp(logits - logits.max())
        p_lm /= p_lm.sum()
        with np.errstate(divide="ignore"):
            return np.log(p_lm), np.log(lam * p_knn + (1 - lam) * p_lm)

    def greedy(self, prompt_ids: Sequence[int], n: int, k: int, temperature: float,
               lam: float) -> list[int]:
        out: list[int] = []
        for _ in range(n):
            token = int(np.argmax(self.logprobs(list(prompt_ids) + out, k, temperature, lam)[1]))
            out.append(token)
            if token in self.hf.eos_ids:
                break
        return out
