"""RTD with transformers and numpy, written from the paper (Shi et al. 2024),
independent of ``sglang_ilsi.datastore`` and the ``rtd`` method: the keys read
back from the store's index file, every distance computed by brute force per
head slice, the K nearest per head, softmax(−distance / T) aggregated by value
and averaged over heads, p = λ·r + (1−λ)·p_LM."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch


class RtdReference:
    def __init__(self, hf, store_path: str):
        import faiss

        self.hf = hf
        root = Path(store_path)
        index = faiss.read_index(str(root / "index.faiss"))
        self.keys = index.reconstruct_n(0, index.ntotal).astype(np.float64)
        self.values = np.load(root / "values.npy")
        self.layer = json.loads((root / "meta.json").read_text())["layer"]

    @torch.no_grad()
    def logprobs(self, ids: Sequence[int], k: int, temperature: float, lam: float,
                 heads: int) -> np.ndarray:
        out = self.hf.model(torch.tensor([list(ids)]), output_hidden_states=True)
        hidden = out.hidden_states[self.layer][0, -1].double().numpy()
        logits = out.logits[0, -1].double().numpy()
        width = hidden.shape[0] // heads
        r = np.zeros(logits.shape[0])
        for h in range(heads):
            part = slice(h * width, (h + 1) * width)
            distance = np.sqrt(((self.keys[:, part] - hidden[part]) ** 2).sum(axis=1))
            nearest = np.argsort(distance, kind="stable")[:k]
            w = np.exp(-(distance[nearest] - distance[nearest].min()) / temperature)
            np.add.at(r, self.values[nearest], w / w.sum() / heads)
        p_lm = np.exp(logits - logits.max())
        p_lm /= p_lm.sum()
        return np.log(lam * r + (1 - lam) * p_lm)

    def greedy(self, prompt_ids: Sequence[int], n: int, k: int, temperature: float,
               lam: float, heads: int) -> list[int]:
        out: list[int] = []
        for _ in range(n):
            token = int(np.argmax(self.logprobs(list(prompt_ids) + out, k, temperature, lam,
                                                heads)))
            out.append(token)
            if token in self.hf.eos_ids:
                break
        return out
