"""Prompting-program rows (run inside the server, one request each).

- ``word_problems`` (SmolLM2-135M-Instruct, chat): one- and two-step
  arithmetic word problems, generated here from seeded templates; ``accuracy``:
  the last number of the whole reply equals the result (one rule for every
  row); ``answer_first``: the first number of the answer does, the answer
  being what follows the answer trigger for ``zero_shot_cot`` (Kojima et al.'s
  answer extraction) and the whole reply for direct answering.
- ``instructions`` (gemma3-270m base model, plain text): short instructions
  with a checkable form (a numbered list of k items, one word, all capitals,
  yes/no, a JSON object with given keys); ``follows``: the reply has exactly
  that form. URIAL against the bare instruction, and against URIAL's preamble
  and markup with no examples (``urial@0``).
"""

from __future__ import annotations

import json
import random
import re

from sglang_ilsi_lab.bench.spec import (
    Generation,
    Item,
    MethodSpec,
    Published,
    TaskSpec,
    register_method,
    register_task,
)

SMOLLM2 = "smollm2-135m-instruct"
GEMMA3 = "gemma3-270m"
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")

# -- word problems ---------------------------------------------------------------------------

_NAMES = ("Ana", "Ben", "Chen", "Dara", "Eli", "Fay", "Gus", "Hana", "Ivo", "Jun")
_THINGS = ("apples", "marbles", "stickers", "books", "coins", "shells", "cards", "pens")


def word_problems(n: int, seed: int) -> list[Item]:
    """Seeded one- and two-step problems (+, -, x) with small numbers."""
    rng = random.Random(seed)
    items = []
    for i in range(n):
        name, thing = rng.choice(_NAMES), rng.choice(_THINGS)
        a, b, c = rng.randint(3, 19), rng.randint(2, 9), rng.randint(1, 9)
        kind = i % 4
        if kind == 0:
            q, r = f"{name} has {a} {thing} and gets {b} more. How many {thing} does {name} have now?", a + b
        elif kind == 1:
            q, r = (f"{name} has {a + b} {thing} and gives {b} away. How many {thing} does "
                    f"{name} have left?"), a
        elif kind == 2:
            q, r = (f"{name} buys {b} bags with {c} {thing} in each bag. How many {thing} does "
                    f"{name} buy?"), b * c
        else:
            q, r = (f"{name} has {a} {thing}, gets {b} more, then gives away {c}. How many "
                    f"{thing} does {name} have now?"), a + b - c
        items.append({"id": i, "prompt": q, "result": r})
    return items


def first_number(text: str) -> float | None:
    found = _NUMBER.search(text.replace(",", ""))
    return float(found.group()) if found else None


def last_number(text: str) -> float | None:
    found = _NUMBER.findall(text.replace(",", ""))
    return float(found[-1]) if found else None


def _word_problem_score(item: Item, gen: Generation) -> dict[str, float]:
    answer = gen.report.get("answer", gen.text) if gen.report.get("method") else gen.text
    return {"accuracy": float(last_number(gen.text) == item["result"]),
            "answer_first": float(first_number(answer) == item["result"])}


register_task(TaskSpec(
    name="word_problems",
    description="one- and two-step arithmetic word problems (+, -, x), numeric answer",
    models=(SMOLLM2,),
    quick_models=(),
    items=word_problems,
    score=_word_problem_score,
    primary="accuracy",
    higher_is_better={"accuracy": True, "answer_first": True},
    max_new_tokens=96,
    chat=True,
    items_default=120,
    items_quick=6,
    seed=7,
))

register_method(MethodSpec(
    name="direct", family="baseline", tasks=("word_problems",), temperature=0.0,
    notes="the question alone, greedy",
))
register_method(MethodSpec(
    name="zero_shot_cot", family="prompting", tasks=("word_problems",),
    ilsi={"method": "zero_shot_cot", "answer_max_tokens": 16}, temperature=0.0,
    baselines=("direct",),
    published=Published(
        "Kojima et al. 2022, Large Language Models are Zero-Shot Reasoners (NeurIPS)",
        "\"Let's think step by step.\" raises zero-shot arithmetic accuracy (MultiArith "
        "17.7% -> 78.7%, GSM8K 10.4% -> 40.7% with text-davinci-002); the gain appears only "
        "at large scale, small models do not benefit"),
    notes="greedy; reasoning budget 96 tokens, answer 16 tokens after \"Therefore, the "
          "answer is\"",
))

# -- instructions with a checkable form ---------------------------------------------------------

_TOPICS = ("fruits", "animals", "colors", "countries", "sports", "vegetables", "tools",
           "musical instruments", "birds", "flowers")
_WORDS = (("the capital of France", "Paris"), ("the color of grass", "green"),
          ("the opposite of hot", "cold"), ("the largest planet", "Jupiter"),
          ("the animal that says moo", "cow"), ("the day after Monday", "Tuesday"))
_SENTENCE_TOPICS = ("the sea", "a rainy day", "breakfast", "a train journey", "winter",
                    "a library")
_CLAIMS = ("water boils at 100 degrees Celsius at sea level", "the sun rises in the west",
           "a week has seven days", "cats are reptiles", "two plus two is four",
           "ice is colder than steam")
_PEOPLE = (("Maria", 31), ("Tom", 45), ("Aiko", 27), ("Omar", 52), ("Lena", 38))


def instructions(n: int, seed: int) -> list[Item]:
    rng = random.Random(seed)
    items = []
    for i in range(n):
        form = ("list", "word", "capitals", "yes_no", "json")[i % 5]
        if form == "list":
            k, topic = rng.randint(3, 5), rng.choice(_TOPICS)
            prompt = (f"List {k} {topic} as a numbered list (1., 2., ...), one per line. "
                      "Write nothing else.")
            items.append({"id": i, "prompt": prompt, "form": form, "k": k})
        elif form == "word":
            what, _ = rng.choice(_WORDS)
            items.append({"id": i, "form": form,
                          "prompt": f"What is {what}? Answer with one word only."})
        elif form == "capitals":
            topic = rng.choice(_SENTENCE_TOPICS)
            items.append({"id": i, "form": form, "prompt": f"Write one sentence about {topic}, "
                          "using only capital letters."})
        elif form == "yes_no":
            claim = rng.choice(_CLAIMS)
            items.append({"id": i, "form": form,
                          "prompt": f"Is it true that {claim}? Reply with only yes or no."})
        else:
            name, age = rng.choice(_PEOPLE)
            items.append({"id": i, "form": form, "prompt": (
                f"Write a JSON object with the keys \"name\" and \"age\" for {name}, who is "
                f"{age} years old. Reply with the JSON object only.")})
    return items


def follows(item: Item, text: str) -> bool:
    """Whether ``text`` has exactly the form the instruction asked for."""
    reply = text.strip()
    form = item["form"]
    if form == "list":
        lines = [line.strip() for line in reply.splitlines() if line.strip()]
        return len(lines) == item["k"] and all(
            re.match(rf"{i}\.\s*\S", line) for i, line in enumerate(lines, 1))
    if form == "word":
        return re.fullmatch(r"[A-Za-z]+[.!]?", reply) is not None
    if form == "capitals":
        letters = [c for c in reply if c.isalpha()]
        return len(reply.split()) >= 3 and bool(letters) and all(c.isupper() for c in letters)
    if form == "yes_no":
        return reply.lower().rstrip(".!") in ("yes", "no")
    try:
        value = json.loads(reply)
    except json.JSONDecodeError:
        return False
    return isinstance(value, dict) and set(value) == {"name", "age"}


def _instruction_score(item: Item, gen: Generation) -> dict[str, float]:
    return {"follows": float(follows(item, gen.text))}


register_task(TaskSpec(
    name="instructions",
    description="short instructions with a checkable form (numbered list, one word, "
                "capitals, yes/no, JSON keys)",
    models=(GEMMA3,),
    quick_models=(),
    items=instructions,
    score=_instruction_score,
    primary="follows",
    higher_is_better={"follows": True},
    max_new_tokens=64,
    chat=False,
    items_default=100,
    items_quick=5,
    seed=11,
))

register_method(MethodSpec(
    name="plain_base", family="baseline", tasks=("instructions",), temperature=0.0,
    notes="the bare instruction sent to the base model, greedy",
))
_URIAL_CLAIM = Published(
    "Lin et al. 2024, The Unlocking Spell on Base LLMs (ICLR)",
    "a base model with URIAL's preamble and three stylistic examples in context answers "
    "instructions about as well as its aligned (SFT+RLHF) version (just-eval, Llama-2-70B "
    "and Mistral-7B); without them it mostly continues the text")
register_method(MethodSpec(
    name="urial", family="prompting", tasks=("instructions",), ilsi={"method": "urial"},
    temperature=0.0, baselines=("plain_base", "urial@0"), published=_URIAL_CLAIM,
    notes="our own preamble and 3 examples (not the paper's), greedy",
))
register_method(MethodSpec(
    name="urial@0", family="prompting", tasks=("instructions",),
    ilsi={"method": "urial", "num_examples": 0}, temperature=0.0, baselines=("plain_base",),
    published=_URIAL_CLAIM,
    notes="URIAL's preamble and markup, no examples (an ablation)",
))
