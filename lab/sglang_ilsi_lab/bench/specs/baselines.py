"""Baseline rows every comparison refers to: greedy and single samples."""

from __future__ import annotations

from sglang_ilsi_lab.bench.spec import MethodSpec, register_method

register_method(MethodSpec(
    name="greedy", family="baseline",
    tasks=("arithmetic", "json", "open_text", "conflict", "humaneval", "facts", "stdin_programs",
           "code_completion"),
    temperature=0.0, quick=True,
))
register_method(MethodSpec(
    name="sample", family="baseline", tasks=("arithmetic", "humaneval"), temperature=0.7,
    quick=True,
    notes="one sample at T=0.7, the temperature the selection rows sample their candidates at",
))
register_method(MethodSpec(
    name="sample_t1", family="baseline", tasks=("arithmetic", "open_text"), temperature=1.0,
    quick=True, notes="one sample at T=1 (pure ancestral sampling), what truncation methods cut",
))

register_method(MethodSpec(
    name="sample_t1.5", family="baseline", tasks=("arithmetic",), temperature=1.5,
    notes="one sample at T=1.5, where pure sampling starts to fall apart",
))


def _drop_context(item: dict) -> dict:
    return {**item, "context": ""}


register_method(MethodSpec(
    name="greedy_no_context", family="baseline", tasks=("conflict",), temperature=0.0,
    transform_item=_drop_context,
    notes="the question without the counterfactual context: how often the model states the "
          "real-world fact (its memory) at all",
))
