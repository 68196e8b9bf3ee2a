"""The exactness oracle for the multi-distribution methods: plain transformers
loops over the target, its auxiliary models, its second context and its
early layers, with the plain references of ``multi_references.py``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import multi_references as ref
import numpy as np
import torch


class MultiHF:
    def __init__(self, target: str, aux: dict[str, str]):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        load = lambda p: AutoModelForCausalLM.from_pretrained(p, dtype=torch.float32).eval()  # noqa: E731
        self.tokenizer = AutoTokenizer.from_pretrained(target)
        self.model = load(target)
        self.aux = {name: load(path) for name, path in aux.items()}
        self.eos_ids = [self.model.config.eos_token_id]

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text)["input_ids"]

    @torch.no_grad()
    def _last(self, model: Any, ids: Sequence[int]) -> np.ndarray:
        return model(torch.tensor([list(ids)])).logits[0, -1].double().numpy()

    @torch.no_grad()
    def _final_and_layers(self, ids: Sequence[int], layers: Sequence[int]):
        out = self.model(torch.tensor([list(ids)]), output_hidden_states=True)
        early = {}
        for j in layers:
            h = self.model.model.norm(out.hidden_states[j][:, -1])
            early[j] = self.model.lm_head(h)[0].double().numpy()
        return out.logits[0, -1].double().numpy(), early

    def row(self, method: str, p: dict[str, Any], ids: list[int], second: list[int] | None,
            ) -> np.ndarray:
        """The reference's processed logits for one step."""
        if method in ("dola", "sled"):
            final, early = self._final_and_layers(ids, p["layers"])
            if method == "dola":
                return ref.dola(final, early, p["alpha"])[0]
            return ref.sled(final, early, p["evolution_rate"], p["evolution_scale"])
        z = self._last(self.model, ids)
        aux = lambda name: self._last(self.aux[name], ids)  # noqa: E731
        if method == "contrastive_decoding":
            return ref.contrastive_decoding(z, aux(p["amateur"]), p["alpha"],
                                            p["amateur_temperature"])
        if method == "contrastive_decoding_beta":
            return ref.contrastive_decoding_beta(z, aux(p["amateur"]), p["alpha"], p["beta"])
        if method == "dexperts":
            return ref.dexperts(z, aux(p["expert"]) if p["expert"] else None,
                                aux(p["anti_expert"]) if p["anti_expert"] else None, p["alpha"])
        if method == "linear_combination":
            return ref.linear_combination(z, [aux(n) for n in p["models"]], p["weights"],
                                          p["target_weight"])
        s = self._last(self.model, second)
        if method == "cad":
            return ref.cad(z, s, p["alpha"])
        if method == "multi_input_cd":  # CAD's contrast, against an irrelevant passage
            return ref.cad(z, s, p["beta"])
        if method == "instructive_decoding":
            return ref.contrast(z, s, p["epsilon"])
        if method == "rose":
            return ref.contrast(z, s, p["alpha"])
        if method == "pmi_decode":
            return ref.pmi_decode(z, s, p["lam"], p["top_p"])
        if method == "cfg":
            return ref.cfg(z, s, p["gamma"])
        raise KeyError(method)

    def greedy(self, prompt_ids: list[int], n: int, method: str | None,
               params: dict[str, Any] | None = None,
               second_ids: list[int] | None = None) -> list[int]:
        out: list[int] = []
        for _ in range(n):
            ids = prompt_ids + out
            if method is None:
                row = self._last(self.model, ids)
            else:
                second = None if second_ids is None else second_ids + out
                row = self.row(method, params or {}, ids, second)
            token = int(np.argmax(row))
            out.append(token)
            if token in self.eos_ids:
                break
        return out
