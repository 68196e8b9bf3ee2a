"""Built-in bench tasks: arithmetic, JSON extraction, open-ended text, context conflict.

- ``arithmetic`` (lab pair early checkpoint, ~0.6 greedy accuracy): multi-step
  +/- with worked steps; accuracy of the ``#### N`` answer.
- ``json``: a sentence -> ``{"name", "age", "city", "job"}``; ``valid`` (the
  whole output is one JSON object), ``exact`` (the record, types included),
  ``fields`` (share of the four fields right).
- ``open_text`` (SmolLM2): open-ended writing prompts; ``diversity``,
  ``rep_2``, ``rep_4`` and ``ppl`` (perplexity of the output under the
  unmodified model: lower reads as more fluent, but greedy loops score low too).
- ``conflict`` (SmolLM2): a counterfactual fact in the prompt, then a question
  about it; ``context`` (the answer follows the prompt's fact) and ``memory``
  (it gives the real-world fact instead).
"""

from __future__ import annotations

import json
import math

from sglang_ilsi_lab.bench import stats
from sglang_ilsi_lab.bench.spec import Generation, Item, TaskSpec, register_task
from sglang_ilsi_lab.data import open_ended, synthetic

SMOLLM2 = "smollm2-135m-instruct"
LAB = "lab-target-early"


def _arithmetic_score(item: Item, gen: Generation) -> dict[str, float]:
    return {"accuracy": float(synthetic.check("arithmetic", gen.text, item))}


register_task(TaskSpec(
    name="arithmetic",
    description="held-out +/- arithmetic with worked steps, '#### N' answer (1-3 operations)",
    models=(LAB,),
    items=lambda n, seed: synthetic.arithmetic(n, seed=seed),
    score=_arithmetic_score,
    primary="accuracy",
    higher_is_better={"accuracy": True},
    max_new_tokens=48,
    chat=False,
    items_default=400,  # the lab pair's training data excludes the first 500 of seed 1
    items_quick=6,
))

JSON_INSTRUCTION = ("Extract the person's name, age, city and job from the sentence below. "
                    "Reply with only a JSON object with the keys \"name\", \"age\" (a number), "
                    "\"city\" and \"job\".\nSentence: {sentence}")


def _json_prompt(item: Item, chat: bool) -> str:
    return JSON_INSTRUCTION.format(sentence=item["sentence"]) if chat else item["prompt"]


def _json_score(item: Item, gen: Generation) -> dict[str, float]:
    text = gen.text.strip()
    try:
        whole = json.loads(text)
        valid = isinstance(whole, dict)
    except ValueError:
        valid = False
    try:
        parsed = synthetic.extract_json(gen.text)
    except ValueError:
        parsed = None
    record = item["record"]
    fields = (sum(parsed.get(k) == v and type(parsed.get(k)) is type(v)
                  for k, v in record.items()) / len(record)
              if isinstance(parsed, dict) else 0.0)
    return {"valid": float(valid), "exact": float(synthetic.check("json", gen.text, item)),
            "fields": float(fields)}


register_task(TaskSpec(
    name="json",
    description="sentence -> JSON record (name, age, city, job); validity and exact match",
    models=(SMOLLM2, LAB),
    quick_models=(LAB,),
    items=lambda n, seed: synthetic.json_extraction(n, seed=seed),
    score=_json_score,
    primary="valid",
    higher_is_better={"valid": True, "exact": True, "fields": True},
    max_new_tokens=64,
    prompt=_json_prompt,
    items_default=40,
    items_quick=6,
))


def _text_score(item: Item, gen: Generation) -> dict[str, float]:
    ppl = stats.perplexity(gen.output_logprobs or [])
    return {"diversity": stats.diversity(gen.text), "rep_2": stats.rep_n(gen.text, 2),
            "rep_4": stats.rep_n(gen.text, 4), "ppl": ppl if math.isfinite(ppl) else math.nan,
            "words": float(len(gen.text.split()))}


register_task(TaskSpec(
    name="open_text",
    description="open-ended writing prompts; repetition, diversity, perplexity under the model",
    models=(SMOLLM2,),
    items=lambda n, seed: open_ended.open_ended(n, seed=seed),
    score=_text_score,
    primary="diversity",
    higher_is_better={"diversity": True, "rep_2": False, "rep_4": False, "ppl": False,
                      "words": True},
    quick_models=(LAB,),  # mechanics only: the lab model writes sums, not prose
    max_new_tokens=64,
    needs_logprobs=True,
    items_default=32,
    items_quick=4,
))


def _conflict_prompt(item: Item, chat: bool) -> str:
    if chat:
        context = item["context"]
        return (f"{context}\n" if context else "") + item["question"] + \
            " Answer in a few words."
    return (f"{item['context']} " if item["context"] else "") + item["prompt_no_context"]


def _conflict_score(item: Item, gen: Generation) -> dict[str, float]:
    text = gen.text.lower()
    return {"context": float(item["answer"].strip().lower() in text),
            "memory": float(item["memory_answer"].strip().lower() in text)}


register_task(TaskSpec(
    name="conflict",
    description="a counterfactual fact in the prompt, then a question on it; does the answer "
                "follow the context or the model's memory?",
    models=(SMOLLM2,),
    quick_models=(LAB,),  # mechanics only: the lab model knows no facts
    items=lambda n, seed: synthetic.conflict(n, seed=seed),
    score=_conflict_score,
    primary="context",
    higher_is_better={"context": True, "memory": False},
    max_new_tokens=16,
    prompt=_conflict_prompt,
    items_default=80,
    items_quick=4,
))
