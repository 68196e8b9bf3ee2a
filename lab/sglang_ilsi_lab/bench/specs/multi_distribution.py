"""Multi-distribution rows: methods that contrast the target with a second
distribution, against greedy decoding.

- **contrastive** (auxiliary model): contrastive decoding (Li et al. 2023) and
  its logit-space β variant (O'Brien & Lewis 2023), with the target's
  same-tokenizer amateur loaded beside it (``--ilsi-aux-model amateur=...``):
  ``smollm2-amateur`` for SmolLM2, ``lab-draft`` for the lab pair. On
  open-ended text (diversity, repetition) and on the lab arithmetic task.
- **context-aware** (second context): CAD (Shi et al. 2024) on the
  context-vs-memory conflict task; the second context is the prompt with the
  counterfactual context cut out (``remove``, built per item by a row runner).
- **layer contrast** (early layers): DoLa (Chuang et al. 2024) and SLED (Zhang
  et al. 2024) on closed-book factual questions (``facts``: the conflict
  task's questions without their context, scored against the real-world
  answer) and on the lab arithmetic task.

Costs come from the ``ilsi`` report: the amateur's tokens (``aux_model_tokens``)
and the second context's tokens (``extra_forward_tokens``) count as forward
tokens; the time spent computing the extra distributions is the per-item
metric ``extra_ms``, and ``skipped_steps`` is the share of steps where the
extra distribution was not available and the method did not apply.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from sglang_ilsi_lab.bench.spec import (
    Generation,
    Item,
    MethodSpec,
    Published,
    SpecError,
    TaskSpec,
    register_method,
    register_task,
)
from sglang_ilsi_lab.bench.validation import ValidatedChoice
from sglang_ilsi_lab.data import synthetic

SMOLLM2 = "smollm2-135m-instruct"
# the same-tokenizer amateur of each target model
AMATEURS = {SMOLLM2: "smollm2-amateur", "lab-target-early": "lab-draft",
            "lab-target": "lab-draft"}


def companion_path(model: str, role: str = "amateur") -> str:
    """The folder of ``model``'s same-tokenizer companion (its amateur, or its
    speculative draft), built if missing: ``smollm2-amateur`` takes a few CPU
    minutes, once, into the user cache."""
    from sglang_ilsi_lab.models import catalog

    name = AMATEURS.get(model)
    if name is None:
        raise SpecError(f"no same-tokenizer {role} is known for {model!r} "
                        f"(known: {', '.join(AMATEURS)})")
    try:
        return str(catalog.prepare(name))
    except catalog.ModelError as exc:
        raise SpecError(f"the {role} {name!r} for {model} cannot be prepared: {exc}") from None


def amateur_args(model: str) -> list[str]:
    """``--ilsi-aux-model amateur=PATH`` for ``model``'s amateur."""
    return ["--ilsi-aux-model", f"amateur={companion_path(model)}"]


def cost_metrics(item: Item, gen: Generation) -> dict[str, float]:
    """Per-item cost read from the ilsi report (see the module docstring)."""
    cost = gen.report.get("cost") or {}
    steps = float(cost.get("steps", 0) or 0)
    out = {"extra_ms": float(cost.get("extra_distributions_ms", 0.0) or 0.0)}
    if steps:
        out["skipped_steps"] = float(cost.get("steps_without_method", 0) or 0) / steps
    return out


def dola_metrics(item: Item, gen: Generation) -> dict[str, float]:
    """Cost, plus which premature layer DoLa chose: ``premature_layer`` (mean layer
    index over the steps) and ``layer0_share`` (share of steps contrasting with the
    embedding output)."""
    out = cost_metrics(item, gen)
    counts = (gen.report.get("stats") or {}).get("premature_layer_counts") or {}
    steps = sum(counts.values())
    if steps:
        out["premature_layer"] = sum(int(k) * v for k, v in counts.items()) / steps
        out["layer0_share"] = counts.get("0", 0) / steps
    return out


# -- closed-book facts ----------------------------------------------------------------

NUMBER_WORDS = {"0": "zero", "1": "one", "2": "two", "3": "three", "4": "four", "5": "five",
                "6": "six", "7": "seven", "8": "eight", "9": "nine", "10": "ten",
                "12": "twelve"}


def facts_items(n: int, seed: int) -> list[Item]:
    """``n`` closed-book test questions (distinct; the test facts only, see
    :func:`sglang_ilsi_lab.data.synthetic.closed_book`)."""
    return synthetic.closed_book(n, seed=seed, split="test")


def facts_validation_items(seed: int = synthetic.EVAL_SEED) -> list[Item]:
    """Every closed-book validation question: facts no test item asks about."""
    n = 2 * synthetic.CLOSED_BOOK_VALIDATION_FACTS  # two question templates per fact
    return synthetic.closed_book(n, seed=seed, split="validation")


def _facts_prompt(item: Item, chat: bool) -> str:
    return item["question"] + " Answer in a few words." if chat else item["prompt"]


def _first_number(text: str) -> str | None:
    words = {w: d for d, w in NUMBER_WORDS.items()}
    for token in re.findall(r"[a-z]+|\d+", text):
        if token.isdigit():
            return token
        if token in words:
            return words[token]
    return None


def _facts_score(item: Item, gen: Generation) -> dict[str, float]:
    """The real-world answer is in the output; for a number, the first number the
    output states (digits or a word) is the answer."""
    text = gen.text.lower()
    answer = item["answer"].strip().lower()
    ok = _first_number(text) == answer if answer.isdigit() else answer in text
    return {"correct": float(ok)}


register_task(TaskSpec(
    name="facts",
    description="closed-book factual questions (capitals, languages, authors, inventors...): "
                "does the answer contain the real-world fact?",
    models=(SMOLLM2,),
    quick_models=(),
    items=facts_items,
    score=_facts_score,
    primary="correct",
    higher_is_better={"correct": True},
    max_new_tokens=16,
    prompt=_facts_prompt,
    items_default=150,
    items_quick=4,
    # 2: the test items are the test facts only (a validation split of facts is held out)
    version=2,
))


# -- contrastive decoding with an amateur ----------------------------------------------

CD_TEXT = Published(
    "Li et al. 2023, Contrastive Decoding: Open-ended Text Generation as Optimization (ACL)",
    "far less repetition and higher diversity than greedy search, with coherence and MAUVE "
    "above nucleus sampling (OPT-13B / GPT-2 XL experts, 125M-size amateurs; wikinews, "
    "wikitext, BookCorpus)")
CD_REASONING = Published(
    "O'Brien & Lewis 2023, Contrastive Decoding Improves Reasoning in Large Language Models",
    "CD (β = 0.5, α = 0.1, greedy) beats greedy decoding on GSM8K and other arithmetic "
    "reasoning for LLaMA models (1.5B amateur); it can hurt some commonsense tasks")
AUX_TOKENS = ("; 'fwd tokens' adds the amateur's forwarded tokens (its prompt prefill where "
              "not already in its prefix cache, then one per step): the β row runs second "
              "on the same prompts and finds their prefill cached, so its count is lower "
              "for that reason alone")
CD_NOTES = {
    "open_text": "amateur: smollm2-amateur, SmolLM2's first 6 of 30 layers briefly distilled "
                 "on the target's greedy outputs (about 54% greedy token agreement); its "
                 "tokens count one-for-one in 'fwd tokens' although it costs about a third "
                 "of a target token; perplexity under the target (the ppl column) rises by "
                 "construction when CD leaves the target's argmax" + AUX_TOKENS,
    "arithmetic": "amateur: lab-draft (0.27 M parameters, greedy arithmetic accuracy 0.11: "
                  "it copies the worked-step format but misadds) against lab-target-early "
                  "(1.07 M), trained on the same data: the amateur's errors are the kind CD "
                  "is meant to subtract; but the draft also gets most digits right (it agrees with "
                  "lab-target on 94% of greedy tokens), and where the expert's α-head holds "
                  "two candidate digits, subtracting the amateur's log-probability favours the "
                  "one the amateur finds less likely, often the wrong one" + AUX_TOKENS,
}

register_method(MethodSpec(
    name="contrastive_decoding", family="contrastive", tasks=("open_text", "arithmetic"),
    ilsi={"method": "contrastive_decoding", "amateur": "amateur", "alpha": 0.1},
    temperature=0.0, baselines=("greedy",),
    metric={"open_text": "diversity", "arithmetic": "accuracy"},
    server_args=amateur_args, models=tuple(AMATEURS), metrics_hook=cost_metrics,
    published={"open_text": CD_TEXT, "arithmetic": CD_REASONING}, notes=CD_NOTES,
))
register_method(MethodSpec(
    name="contrastive_decoding_beta", family="contrastive", tasks=("open_text", "arithmetic"),
    ilsi={"method": "contrastive_decoding_beta", "amateur": "amateur", "alpha": 0.1,
          "beta": 0.5},
    temperature=0.0, baselines=("greedy",),
    metric={"open_text": "diversity", "arithmetic": "accuracy"},
    server_args=amateur_args, models=tuple(AMATEURS), metrics_hook=cost_metrics,
    published={"open_text": CD_TEXT, "arithmetic": CD_REASONING}, notes=CD_NOTES,
))

# -- context-aware decoding -------------------------------------------------------------


def context_removed(item: Item, prompt: str) -> str:
    """The text to cut from ``prompt`` so that what remains is the conflict task's
    question without its context (the context and the separator after it)."""
    context = item["context"]
    for part in (f"{context}\n", f"{context} ", context):
        if part in prompt:
            return part
    raise ValueError(f"{item['id']}: the context is not in the prompt")


def _with_context(client: Any, task: TaskSpec, item: Item, prompt_ids: list[int],
                  row: MethodSpec, second: Callable[[str], dict[str, Any]]) -> Generation:
    """One /generate call whose ilsi object adds ``second(context)``: how the second
    prompt treats this item's context (the text ``context_removed`` finds)."""
    chat = client.has_chat_template if task.chat is None else task.chat
    ilsi = {**(row.ilsi_for(task.name) or {}),
            **second(context_removed(item, task.prompt(item, chat)))}
    return client.generate(prompt_ids, max_new_tokens=task.max_new_tokens,
                           temperature=row.temperature, ilsi=ilsi,
                           sampling={**task.sampling, **row.sampling})


def cad_runner(client: Any, task: TaskSpec, item: Item, prompt_ids: list[int],
               row: MethodSpec) -> Generation:
    """CAD: the second prompt cuts this item's context out (``remove``)."""
    return _with_context(client, task, item, prompt_ids, row,
                         lambda context: {"remove": [context]})


CAD = Published(
    "Shi et al. 2024, Trusting Your Evidence: Hallucinate Less with Context-aware Decoding "
    "(NAACL)",
    "on knowledge-conflict tasks (MemoTrap, NQ-Swap) CAD makes answers follow the context "
    "much more often than regular decoding, across OPT, GPT-Neo, LLaMA and FLAN-T5 "
    "(α = 1 for knowledge conflicts, 0.5 otherwise)")

for alpha in (0.5, 1.0):
    register_method(MethodSpec(
        name="cad" if alpha == 0.5 else f"cad@{alpha:g}", family="context-aware",
        tasks=("conflict",), ilsi={"method": "cad", "alpha": alpha}, temperature=0.0,
        runner=cad_runner, baselines=("greedy",), metric="context",
        metrics_hook=cost_metrics, published=CAD,
        notes=f"α = {alpha:g}; the second context is the chat prompt with the counterfactual "
              "context sentence cut out (remove), i.e. the greedy_no_context prompt; the "
              "'memory' column is the share of answers giving the real-world fact",
    ))

# -- multi-input contrastive decoding ----------------------------------------------------

# The irrelevant passage put in place of each item's context: on topic for no item.
IRRELEVANT = "The library closes at six on weekdays and at noon on Saturdays."


def multi_input_runner(client: Any, task: TaskSpec, item: Item, prompt_ids: list[int],
                       row: MethodSpec) -> Generation:
    """Multi-input CD: the second prompt has an irrelevant passage in place of this
    item's context (``passage`` → ``irrelevant``)."""
    return _with_context(client, task, item, prompt_ids, row, lambda context: {
        "passage": context, "irrelevant": context.replace(item["context"], IRRELEVANT)})


MULTI_INPUT_CD = Published(
    "Zhao et al. 2024, Enhancing Contextual Understanding in Large Language Models through "
    "Contrastive Decoding (NAACL)",
    "contrasting the output given the relevant passage with the output given an irrelevant "
    "passage makes answers follow the given context more under knowledge conflicts and "
    "raises open-domain QA accuracy, without training")

register_method(MethodSpec(
    name="multi_input_cd", family="context-aware", tasks=("conflict",),
    ilsi={"method": "multi_input_cd", "beta": 1.0}, temperature=0.0,
    runner=multi_input_runner, baselines=("greedy",), metric="context",
    metrics_hook=cost_metrics, published=MULTI_INPUT_CD,
    notes="β = 1; the second context is the chat prompt with the counterfactual context "
          f"sentence replaced by an irrelevant one ({IRRELEVANT!r}); CAD's row differs only "
          "in cutting the sentence out; the 'memory' column is the share of answers giving "
          "the real-world fact",
))

# -- layer contrast ---------------------------------------------------------------------

DOLA = Published(
    "Chuang et al. 2024, DoLa: Decoding by Contrasting Layers Improves Factuality (ICLR)",
    "contrasting the final layer with a dynamically chosen early layer makes LLaMA models "
    "more factual (TruthfulQA, FACTOR up; small gains on StrategyQA and GSM8K)")
SLED = Published(
    "Zhang et al. 2024, SLED: Self Logits Evolution Decoding for Improving Factuality (NeurIPS)",
    "evolving the final logits toward the early layers' latent estimate improves factual "
    "accuracy over greedy and DoLa (TruthfulQA, FACTOR, StrategyQA, GSM8K) across model "
    "families")
LAYER_NOTES = {
    "facts": "SmolLM2 has 30 layers; default candidates: even layers 0..14 (0 = the "
             "embeddings) through the final norm and the tied head",
    "arithmetic": "the lab model has 4 layers, so the default candidate set (even layers "
                  "below 4/2) is layer 0 alone: the embeddings through the final norm and the "
                  "tied head, an almost input-token-only distribution, not the half-trained "
                  "intermediate layer the method assumes",
}
DOLA_NOTES = {
    **LAYER_NOTES,
    "facts": LAYER_NOTES["facts"] + "; layer0_share is the share of steps whose premature "
             "layer (largest JSD from the final layer) was layer 0, the embeddings: then the "
             "contrast is with the tied head applied to the input embedding, which in a "
             "135 M model is far from any intermediate 'premature answer' (see dola@validated "
             "for the bucket chosen on validation facts)",
}

register_method(MethodSpec(
    name="dola", family="layer contrast", tasks=("facts", "arithmetic"),
    ilsi={"method": "dola", "alpha": 0.1}, temperature=0.0,
    baselines=("greedy",), metric={"facts": "correct", "arithmetic": "accuracy"},
    metrics_hook=dola_metrics, published=DOLA, notes=DOLA_NOTES,
))
# DoLa's two candidate buckets (the release's): even layers of the lower half (the
# server's default) and of the upper half (16..28 of SmolLM2's 30)
DOLA_BUCKETS = {"low": {"method": "dola", "alpha": 0.1},
                "high": {"method": "dola", "layers": list(range(16, 30, 2)), "alpha": 0.1}}
DOLA_CHOICE = ValidatedChoice(DOLA_BUCKETS, facts_validation_items)


def dola_validated(client: Any, task: TaskSpec, item: Item, prompt_ids: list[int],
                   row: MethodSpec) -> Generation:
    """Decode with the DoLa bucket chosen on the validation facts (once per server)."""
    return DOLA_CHOICE.generate(client, task, item, prompt_ids, row)


def dola_validated_metrics(item: Item, gen: Generation) -> dict[str, float]:
    return {**dola_metrics(item, gen), **DOLA_CHOICE.metrics(gen)}


register_method(MethodSpec(
    name="dola@validated", family="layer contrast", tasks=("facts",),
    # what every request carries; the runner adds the chosen bucket's layers
    ilsi={"method": "dola", "alpha": 0.1}, temperature=0.0, runner=dola_validated,
    baselines=("greedy",), metric="correct", metrics_hook=dola_validated_metrics,
    published=DOLA,
    notes="the candidate bucket (low: even layers 0..14, high: 16..28) is chosen as the paper "
          "does, on validation data: the closed-book questions on "
          f"{synthetic.CLOSED_BOOK_VALIDATION_FACTS} held-out facts, which no test item asks "
          "about; chose_high and validation_low/high record the choice",
))
# the upper bucket alone, kept as a diagnostic row (not in the evidence grid)
register_method(MethodSpec(
    name="dola@high", family="layer contrast", tasks=("facts",),
    ilsi=DOLA_BUCKETS["high"], temperature=0.0,
    baselines=("greedy",), metric="correct", metrics_hook=dola_metrics, published=DOLA,
    evidence=False,
    chosen_on_test="bucket was chosen on test items (a diagnostic run on the first 40 of the "
                   "150 test items, 0.40 against greedy's 0.30); dola@validated chooses it on "
                   "a validation split",
    notes="candidate layers 16, 18, ..., 28, the upper bucket",
))
register_method(MethodSpec(
    name="sled", family="layer contrast", tasks=("facts", "arithmetic"),
    ilsi={"method": "sled"}, temperature=0.0,
    baselines=("greedy",), metric={"facts": "correct", "arithmetic": "accuracy"},
    metrics_hook=cost_metrics, published=SLED, notes=LAYER_NOTES,
))
