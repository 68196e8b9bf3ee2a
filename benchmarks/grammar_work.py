"""The grammar backends' own work per decode step, measured in-process.

What a server does for a batch of grammar requests at every step, on SGLang's
own backend objects (``XGrammarGrammarBackend``, ``OutlinesGrammarBackend``,
``GuidanceBackend``, built as SGLang builds them, over the model's tokenizer):
allocate the vocabulary mask, fill each request's row, move it, apply it to
the logits, and advance each request's matcher by the sampled token (the end
of sequence masked, as the benchmark's ``min_new_tokens`` masks it). With
``--grammar-backend outlines`` the server fills rows through the plugin's
cache (``engine/scheduler/outlines_masks.py``), and so does this. Timing this work alone
separates the backend's cost from the machine's round-to-round noise, which on
a 2-core CPU is larger than the effect measured end to end.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch


def _backend(name: str, tokenizer: Any, vocab: int, eos: list[int]) -> Any:
    if name == "xgrammar":
        from sglang.srt.constrained.xgrammar_backend import XGrammarGrammarBackend

        return XGrammarGrammarBackend(tokenizer, vocab_size=vocab, model_eos_token_ids=eos)
    if name == "outlines":
        from sglang.srt.constrained.outlines_backend import OutlinesGrammarBackend

        return OutlinesGrammarBackend(tokenizer, whitespace_pattern=None)
    if name == "llguidance":
        from sglang.srt.constrained.llguidance_backend import GuidanceBackend

        return GuidanceBackend(tokenizer=tokenizer, n_vocab=vocab, eos_token_ids=set(eos))
    raise ValueError(f"unknown grammar backend {name!r}")


def _step_ms(proto: Any, backend: str, vocab: int, rows: int, steps: int, seed: int,
             eos: list[int]) -> float:
    from sglang.srt.constrained.base_grammar_backend import GrammarRow

    from sglang_ilsi.engine.scheduler import outlines_masks

    g = torch.Generator().manual_seed(seed)
    grammars = [proto.copy() for _ in range(rows)]
    spent = 0.0
    for _ in range(steps):
        logits = torch.randn(rows, vocab, generator=g)
        start = time.perf_counter()
        mask = grammars[0].allocate_vocab_mask(vocab, rows, "cpu")
        if backend == "outlines":
            for i, grammar in enumerate(grammars):
                outlines_masks.fill_vocab_mask(grammar, mask, i)
        else:
            grammars[0].fill_vocab_mask_batched(
                [GrammarRow(i, grammar) for i, grammar in enumerate(grammars)], mask)
        mask = grammars[0].move_vocab_mask(mask, "cpu")
        grammars[0].apply_vocab_mask(logits, mask)
        spent += time.perf_counter() - start
        logits[:, eos] = float("-inf")  # as the benchmark's min_new_tokens does
        sampled = torch.multinomial(torch.softmax(logits / 0.8, -1), 1, generator=g)
        start = time.perf_counter()
        for grammar, token in zip(grammars, sampled.view(-1).tolist(), strict=True):
            grammar.accept_token(token)
        spent += time.perf_counter() - start
    return 1000.0 * spent / steps


def backend_work(model: str, backend: str, grammars: dict[str, tuple[str, str]],
                 rows: int, steps: int, trials: int = 3) -> dict[str, float]:
    """Median ms per step of ``rows`` requests for each ``name: (kind, text)``
    grammar (kind ``regex`` or ``json``), after one untimed warm-up trial."""
    from transformers import AutoConfig, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    vocab = AutoConfig.from_pretrained(model).vocab_size
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    b = _backend(backend, tokenizer, vocab, eos)
    out = {}
    for name, (kind, text) in grammars.items():
        proto = b.dispatch_regex(text) if kind == "regex" else b.dispatch_json(text)
        _step_ms(proto, backend, vocab, rows, steps, 0, eos)  # warm-up: lazy init
        out[name] = round(statistics.median(
            _step_ms(proto, backend, vocab, rows, steps, t + 1, eos) for t in range(trials)), 3)
    return out
