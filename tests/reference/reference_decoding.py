"""A plain transformers decoding loop with the reference method transforms.

The exactness oracle: the same weights run by HF transformers, one token at
a time, with each method's plain reference (``method_references.py``) applied
to the logits. Under greedy decoding the server's tokens must equal these.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import method_references as ref
import numpy as np
import torch

# transform(row_logits, prompt_ids, output_ids) -> processed row
Transform = Callable[[np.ndarray, Sequence[int], Sequence[int]], np.ndarray]


class HFReference:
    def __init__(self, model_path: str):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
        self.eos_ids = [self.model.config.eos_token_id]

    @torch.no_grad()
    def logits(self, ids: Sequence[int]) -> np.ndarray:
        out = self.model(torch.tensor([list(ids)]))
        return out.logits[0, -1].double().numpy()

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text)["input_ids"]

    def greedy(self, prompt_ids: Sequence[int], n: int, transform: Transform | None,
               stop_at_eos: bool = True) -> list[int]:
        out: list[int] = []
        for _ in range(n):
            row = self.logits(list(prompt_ids) + out)
            if transform is not None:
                row = transform(row, prompt_ids, out)
            token = int(np.argmax(row))
            out.append(token)
            if stop_at_eos and token in self.eos_ids:  # SGLang stops there (and returns it)
                break
        return out


def make_transform(method: str, params: dict[str, Any], eos_ids: Sequence[int],
                   temperature: float = 0.0, tokenizer: Any = None) -> Transform:
    """A stateful per-request reference transform for ``method``.

    ``temperature`` is the request's; as in SGLang, ~0 means greedy and the
    truncation methods then work on softmax(logits)."""
    t = temperature
    if method == "typical":
        return lambda row, p, o: ref.typical(row, t, params["mass"], params["min_tokens_to_keep"])
    if method == "epsilon":
        return lambda row, p, o: ref.epsilon(row, t, params["epsilon"])
    if method == "eta":
        return lambda row, p, o: ref.eta(row, t, params["epsilon"])
    if method == "top_n_sigma":
        return lambda row, p, o: ref.top_n_sigma(row, t, params["n"])
    if method == "adaptive":
        return lambda row, p, o: ref.adaptive(row, t, params["epsilon"])
    if method == "penalty_decoding":
        return lambda row, p, o: ref.penalty_decoding(
            row, p, o, eos_ids, params["penalty"], params["window"], params["length_penalty"],
            params["min_length"], params["include_prompt"],
        )
    if method == "keyword_boost":
        spellings = [
            [tokenizer.encode(" " + kw, add_special_tokens=False),
             tokenizer.encode(kw, add_special_tokens=False)]
            for kw in params.get("keywords", [])
        ]
        return lambda row, p, o: ref.keyword_boost(
            row, o, spellings, params.get("token_ids", []), params["strength"],
            params["until_present"],
        )
    if method in ("lexical_constraints", "keyword_decay"):
        # phrase tokenization is the method's own prepare(); the transform is the reference
        from sglang_ilsi import registry
        from sglang_ilsi.methods.constrained.phrases import decode_keywords

        prepared = registry.get(method).prepare(dict(params), tokenizer)
        if method == "keyword_decay":
            spellings = decode_keywords(prepared["keyword_token_ids"])
            return lambda row, p, o: ref.keyword_decay(
                row, o, spellings, params["strength"], params["decay"], params["until_present"])
        lc = ref.LexicalConstraints(decode_keywords(prepared["include_token_ids"]),
                                    decode_keywords(prepared["exclude_token_ids"]), eos_ids,
                                    params["force_after"], params["boost"])
        return lambda row, p, o: lc.step(row, o)[0]
    if method == "length_target":
        return lambda row, p, o: ref.length_target(row, o, eos_ids, params["target"],
                                                   params["strength"], params["tolerance"])
    if method == "look_back":
        lb = ref.LookBack(params["alpha"], params["top_k"], params["window"])
        return lambda row, p, o: lb.step(row, o)
    if method == "mirostat":
        return MirostatReference(params, t)
    if method == "monitor":
        import monitor_reference

        from sglang_ilsi import registry
        from sglang_ilsi.methods.constrained.phrases import decode_keywords

        prepared = registry.get(method).prepare(dict(params), tokenizer)
        triggers = [s for k in decode_keywords(prepared["trigger_token_ids"]) for s in k]
        names = [s for k in decode_keywords(prepared["name_token_ids"]) for s in k]
        return lambda row, p, o: monitor_reference.monitor(row, p, o, triggers, names)
    raise KeyError(method)


class MirostatReference:
    """Mirostat needs the sampled token: it updates μ at the next call from the
    token that was appended to the output since."""

    def __init__(self, params: dict[str, Any], temperature: float):
        self.tau, self.eta, self.t = params["tau"], params["eta"], temperature
        self.mu = 2 * self.tau
        self.pending: np.ndarray | None = None

    def __call__(self, row, prompt_ids, output_ids):  # called once per step
        if self.pending is not None:
            self.mu = ref.mirostat_update(self.mu, self.tau, self.eta, self.pending, output_ids[-1])
        out, self.pending = ref.mirostat_step(row, self.t, self.mu)
        return out
