"""Retrieval rows: RTD on JSON extraction with a reference store of task examples.

RTD (Shi et al. 2024) adapts a model to a task without training or a longer
prompt: a reference store holds, for every token of the answers of a few
hundred worked examples, the model's hidden state before it. The store here is
built (once, cached) from 200 JSON-extraction examples of another seed, written
as the bench writes the task's chat prompt, the example's JSON record as the
completion; every example whose sentence occurs among the first 1,000 items of
the evaluation seed is left out, so the store and the evaluated items are
disjoint. The setting (K = 16, T = 1, λ = 0.5, one head) was chosen on 16
items of a third seed (greedy 0/16 exact, RTD 16/16). ``icl@5`` is what the
paper compares RTD with: the first five of the same examples as earlier chat
turns, in the prompt.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sglang_ilsi import datastore
from sglang_ilsi.cache import cache_root
from sglang_ilsi_lab.bench.spec import (
    Generation,
    Item,
    MethodSpec,
    Published,
    TaskSpec,
    register_method,
)
from sglang_ilsi_lab.bench.specs.core_tasks import JSON_INSTRUCTION
from sglang_ilsi_lab.bench.specs.multi_distribution import cost_metrics
from sglang_ilsi_lab.data import synthetic
from sglang_ilsi_lab.models import catalog

STORE = "json-examples"
EXAMPLES = 200
EXAMPLE_SEED = 7
EVALUATION_SEED = 1  # the task's seed: its first items are never in the store
KEEP_OUT = 1000
SHOTS = 5


def example_items() -> list[Item]:
    """The worked examples RTD's store (and the few-shot row) draw from."""
    held_out = {x["sentence"] for x in synthetic.json_extraction(KEEP_OUT, EVALUATION_SEED)}
    return [x for x in synthetic.json_extraction(EXAMPLES * 2, EXAMPLE_SEED)
            if x["sentence"] not in held_out][:EXAMPLES]


def _turns(item: Item) -> list[dict[str, str]]:
    """One worked example as a user turn (the task's chat prompt) and the answer."""
    return [{"role": "user", "content": JSON_INSTRUCTION.format(sentence=item["sentence"])},
            {"role": "assistant", "content": item["answer"].strip()}]


def example_records(tokenizer: Any) -> list[dict[str, str]]:
    """The reference examples: chat prompt → the record as JSON, then end of turn."""
    return [{"prompt": tokenizer.apply_chat_template(_turns(x)[:1], add_generation_prompt=True,
                                                     tokenize=False),
             "completion": x["answer"].strip() + tokenizer.eos_token}
            for x in example_items()]


def cached_store(model: str, name: str, write_corpus: Callable[[Path, str], None]) -> Path:
    """The bench's store ``name`` for ``model``, built on first use under the cache:
    ``write_corpus(folder, model_folder)`` writes its corpus into an empty folder."""
    path = catalog.prepare(model)
    out = cache_root() / "reference-stores" / f"{model}-{name}"
    if (out / datastore.META).is_file():
        datastore.verify(str(out), str(path))
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as corpus:
        write_corpus(Path(corpus), str(path))
        datastore.build(corpus, str(path), str(out), quiet=True, force=True)
    return out


def reference_store(model: str) -> Path:
    """The model's reference store of JSON examples, built on first use."""

    def write(corpus: Path, model_folder: str) -> None:
        from transformers import AutoTokenizer

        records = example_records(AutoTokenizer.from_pretrained(model_folder))
        (corpus / "examples.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")

    return cached_store(model, f"json-{EXAMPLES}-{EXAMPLE_SEED}", write)


def few_shot_runner(client: Any, task: TaskSpec, item: Item, prompt_ids: list[int],
                    row: MethodSpec) -> Generation:
    """In-context learning: the first ``SHOTS`` examples of the store as earlier chat
    turns, then the item's own prompt; plain greedy decoding."""
    messages = [turn for x in example_items()[:SHOTS] for turn in _turns(x)]
    messages.append({"role": "user", "content": task.prompt(item, True)})
    ids = client.tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                               tokenize=True)
    ids = ids["input_ids"] if hasattr(ids, "keys") else ids
    return client.generate([int(i) for i in ids], max_new_tokens=task.max_new_tokens,
                           temperature=row.temperature, ilsi=None,
                           sampling={**task.sampling, **row.sampling})


register_method(MethodSpec(
    name=f"icl@{SHOTS}", family="retrieval", tasks=("json",), runner=few_shot_runner,
    baselines=("greedy",), metric="exact", models=("smollm2-135m-instruct",),
    evidence=False,
    notes=f"the first {SHOTS} of RTD's reference examples as earlier chat turns: what the "
          "RTD paper compares with",
))

register_method(MethodSpec(
    name="rtd", family="retrieval", tasks=("json",),
    ilsi={"method": "rtd", "datastore": STORE, "k": 16, "temperature": 1.0, "lambda": 0.5},
    server_args=lambda model: ["--ilsi-datastore", f"{STORE}={reference_store(model)}"],
    baselines=("greedy", f"icl@{SHOTS}"), metric="exact", metrics_hook=cost_metrics,
    models=("smollm2-135m-instruct",),
    published=Published(
        "Shi et al. 2024, Reference Trustable Decoding: A Training-Free Augmentation Paradigm "
        "for Large Language Models (NeurIPS)",
        "a reference store of task examples reshaping the output distribution raises "
        "zero-shot accuracy to about 5-shot ICL's, without training or a longer prompt "
        "(e.g. LLaMA2-7B on OBQA and ARC)"),
    notes=f"reference store: {EXAMPLES} examples of seed {EXAMPLE_SEED} (none of the "
          f"evaluation seed's first {KEEP_OUT}), keyed on their answers' tokens; K = 16, "
          "T = 1, λ = 0.5, one head, chosen on 16 items of seed 3",
))
