"""Seeded, checkable synthetic tasks (no benchmark data set is reachable offline).

Every generator is a pure function of its arguments: it draws from its own
``random.Random`` seeded with a string naming the task and the seed, so the
same ``(n, seed, ...)`` always gives the same items, on any machine and Python
version, and two tasks never share a random stream. Items are plain dicts::

    {"id": str, "prompt": str, "answer": str, "task": str, ...task-specific keys}

``prompt + answer`` is the full text a model should produce; :func:`check`
decides whether a model's output (the text generated after ``prompt``)
answers the item.

Tasks
-----
- ``arithmetic``: multi-step +/- with operands 0-99 and worked steps, ending
  in a checkable ``#### N`` line. ``difficulty=None`` draws 1-3 operations;
  ``difficulty=k`` gives exactly ``k`` (1-4 supported; 4 is out of the training
  distribution of the lab pair). Results may be negative.
- ``json``: extract ``{"name", "age", "city", "job"}`` from a templated
  sentence; the answer is the exact JSON (keys in that order).
- ``conflict``: context vs memory, for context-aware decoding. The context
  states a counterfactual ("In this story, the capital of France is Lyon.")
  and the target is the *context* answer. Items also carry ``context``,
  ``question``, ``prompt_no_context`` (the question alone, for the
  context-free distribution) and ``memory_answer`` (the real-world fact).
- ``text``: held-out plain text for perplexity, from the same templates
  (worked sums, JSON sentences, true fact statements) on seed streams that no
  other task uses. ``prompt`` is empty and ``answer`` (also ``text``) is the
  whole passage.

Held-out splits: :data:`EVAL_SEED` is the seed our evaluations use and
:data:`TEXT_SEED` the one for the perplexity set; training data for the lab
pair is drawn from :data:`TRAIN_SEED` with every evaluation prompt removed.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from typing import Any

TRAIN_SEED = 0
EVAL_SEED = 1
TEXT_SEED = 2

Item = dict[str, Any]

# -- arithmetic --------------------------------------------------------------

MAX_OPERAND = 99


def _rng(task: str, seed: int) -> random.Random:
    return random.Random(f"sglang-ilsi/{task}/{seed}")


def arithmetic_item(operands: list[int], ops: list[str], item_id: str = "") -> Item:
    """The item for ``operands[0] ops[0] operands[1] ...`` (evaluated left to right)."""
    if len(operands) != len(ops) + 1 or not ops:
        raise ValueError("need one more operand than operations, and at least one operation")
    expr = str(operands[0]) + "".join(f"{op}{b}" for op, b in zip(ops, operands[1:]))
    value = operands[0]
    steps = []
    for op, b in zip(ops, operands[1:]):
        new = value + b if op == "+" else value - b
        steps.append(f"{value}{op}{b}={new}")
        value = new
    return {
        "id": item_id,
        "prompt": f"Q: {expr}=?\nA:",
        "answer": " " + "\n".join(steps) + f"\n#### {value}",
        "task": "arithmetic",
        "result": value,
        "num_ops": len(ops),
    }


def arithmetic(n: int, seed: int = EVAL_SEED, difficulty: int | None = None) -> list[Item]:
    """``n`` +/- problems; ``difficulty`` = exact number of operations (default: 1-3)."""
    if difficulty is not None and not 1 <= difficulty <= 4:
        raise ValueError(f"difficulty must be 1-4 operations, got {difficulty}")
    rng = _rng(f"arithmetic/{difficulty}", seed)
    items = []
    for i in range(n):
        k = difficulty if difficulty is not None else rng.randint(1, 3)
        operands = [rng.randint(0, MAX_OPERAND) for _ in range(k + 1)]
        ops = [rng.choice("+-") for _ in range(k)]
        items.append(arithmetic_item(operands, ops, f"arithmetic-{seed}-{i}"))
    return items


# -- JSON extraction -----------------------------------------------------------

NAMES = ["Alice", "Bob", "Carol", "David", "Emma", "Frank", "Grace", "Henry", "Iris", "Jack",
         "Karen", "Liam", "Maria", "Noah", "Olivia", "Paul", "Quinn", "Rosa", "Sam", "Tina",
         "Umar", "Vera", "Walter", "Xena", "Yusuf", "Zoe", "Aisha", "Bruno", "Chen", "Dmitri",
         "Elena", "Farid", "Greta", "Hugo", "Ines", "Jonas", "Keiko", "Lars", "Mei", "Nadia"]
CITIES = ["Paris", "Berlin", "Madrid", "Rome", "Tokyo", "Cairo", "Lima", "Oslo", "Dublin",
          "Vienna", "Boston", "Denver", "Austin", "Seattle", "Toronto", "Sydney", "Mumbai",
          "Nairobi", "Lagos", "Seoul", "Hanoi", "Prague", "Warsaw", "Lisbon", "Athens",
          "Zurich", "Chicago", "Montreal", "New York", "Buenos Aires"]
JOBS = ["teacher", "engineer", "doctor", "nurse", "pilot", "chef", "lawyer", "artist",
        "farmer", "baker", "writer", "dentist", "plumber", "architect", "accountant",
        "musician", "scientist", "designer", "mechanic", "librarian", "journalist", "pharmacist",
        "carpenter", "photographer", "electrician"]
SENTENCES = [
    "{name} is {a_job} from {city}, aged {age}.",
    "{name} is a {age}-year-old {job} from {city}.",
    "{name}, age {age}, works as {a_job} in {city}.",
    "Meet {name}: {age} years old, {a_job} living in {city}.",
    "In {city} lives {name}, {a_job} who is {age}.",
    "{name} ({age}) is {a_job} based in {city}.",
    "The {job} {name} is {age} and lives in {city}.",
    "{name} moved to {city} and works as {a_job}; {name} is {age}.",
]


def _article(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def json_item(name: str, age: int, city: str, job: str, template: int = 0,
              item_id: str = "") -> Item:
    sentence = SENTENCES[template].format(name=name, age=age, city=city, job=job,
                                          a_job=_article(job))
    record = {"name": name, "age": age, "city": city, "job": job}
    return {
        "id": item_id,
        "prompt": f"Extract JSON: {sentence}\nJSON:",
        "answer": " " + json.dumps(record),
        "task": "json",
        "sentence": sentence,
        "record": record,
    }


def json_extraction(n: int, seed: int = EVAL_SEED) -> list[Item]:
    """``n`` sentence -> JSON record items."""
    rng = _rng("json", seed)
    items = []
    for i in range(n):
        items.append(json_item(rng.choice(NAMES), rng.randint(18, 79), rng.choice(CITIES),
                               rng.choice(JOBS), rng.randrange(len(SENTENCES)),
                               f"json-{seed}-{i}"))
    return items


# -- context vs memory conflict -------------------------------------------------

# relation -> (facts subject -> true object, statement templates, question templates,
#              extra counterfactual objects)
RELATIONS: dict[str, dict[str, Any]] = {
    "capital": {
        "facts": {"France": "Paris", "Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid",
                  "Japan": "Tokyo", "Egypt": "Cairo", "Canada": "Ottawa",
                  "Australia": "Canberra", "Russia": "Moscow", "China": "Beijing",
                  "Kenya": "Nairobi", "Norway": "Oslo", "Sweden": "Stockholm",
                  "Greece": "Athens", "Portugal": "Lisbon", "Poland": "Warsaw",
                  "Ireland": "Dublin", "Austria": "Vienna", "Peru": "Lima", "Turkey": "Ankara",
                  "Thailand": "Bangkok", "Argentina": "Buenos Aires"},
        "statements": ["the capital of {s} is {o}", "{o} is the capital of {s}"],
        "questions": ["What is the capital of {s}?", "Which city is the capital of {s}?"],
        "extra": ["Lyon", "Munich", "Milan", "Barcelona", "Osaka", "Sydney", "Toronto",
                  "Istanbul", "Porto", "Krakow", "Geneva", "Marseille"],
    },
    "language": {
        "facts": {"France": "French", "Germany": "German", "Italy": "Italian",
                  "Japan": "Japanese", "Brazil": "Portuguese", "Russia": "Russian",
                  "Greece": "Greek", "Poland": "Polish", "Sweden": "Swedish",
                  "Turkey": "Turkish", "Egypt": "Arabic", "Mexico": "Spanish",
                  "Finland": "Finnish", "Hungary": "Hungarian", "Korea": "Korean"},
        "statements": ["people in {s} speak {o}", "the main language of {s} is {o}"],
        "questions": ["What language do people in {s} speak?",
                      "What is the main language of {s}?"],
        "extra": ["Dutch", "Hindi", "Swahili", "Thai", "Welsh"],
    },
    "color": {
        "facts": {"the sky": "blue", "grass": "green", "snow": "white", "coal": "black",
                  "a banana": "yellow", "a tomato": "red", "milk": "white", "a carrot": "orange",
                  "a lemon": "yellow", "blood": "red", "a crow": "black", "a frog": "green"},
        "statements": ["{s} is {o}", "the color of {s} is {o}"],
        "questions": ["What color is {s}?", "What is the color of {s}?"],
        "extra": ["purple", "pink", "brown", "gray", "silver"],
    },
    "author": {
        "facts": {"Hamlet": "William Shakespeare", "1984": "George Orwell",
                  "Pride and Prejudice": "Jane Austen", "War and Peace": "Leo Tolstoy",
                  "Don Quixote": "Miguel de Cervantes", "The Odyssey": "Homer",
                  "Moby-Dick": "Herman Melville", "Frankenstein": "Mary Shelley",
                  "Oliver Twist": "Charles Dickens", "The Raven": "Edgar Allan Poe"},
        "statements": ["{s} was written by {o}", "{o} wrote {s}"],
        "questions": ["Who wrote {s}?", "Who is the author of {s}?"],
        "extra": ["Mark Twain", "Virginia Woolf", "Franz Kafka", "Agatha Christie"],
    },
    "inventor": {
        "facts": {"the telephone": "Alexander Graham Bell", "the light bulb": "Thomas Edison",
                  "the steam engine": "James Watt", "the printing press": "Johannes Gutenberg",
                  "the airplane": "the Wright brothers", "dynamite": "Alfred Nobel",
                  "the radio": "Guglielmo Marconi"},
        "statements": ["{s} was invented by {o}", "{o} invented {s}"],
        "questions": ["Who invented {s}?", "Who is credited with inventing {s}?"],
        "extra": ["Nikola Tesla", "Marie Curie", "Isaac Newton", "Ada Lovelace"],
    },
    "sound": {
        "facts": {"a cow": "moo", "a dog": "woof", "a cat": "meow", "a duck": "quack",
                  "a sheep": "baa", "an owl": "hoot", "a pig": "oink", "a lion": "roar"},
        "statements": ["{s} says {o}", "the sound {s} makes is {o}"],
        "questions": ["What sound does {s} make?", "What does {s} say?"],
        "extra": ["tweet", "ribbit", "neigh"],
    },
    "currency": {
        "facts": {"Japan": "yen", "India": "rupee", "Mexico": "peso", "Russia": "ruble",
                  "China": "yuan", "Britain": "pound", "the United States": "dollar",
                  "South Korea": "won", "Poland": "zloty"},
        "statements": ["the currency of {s} is the {o}", "people in {s} pay with the {o}"],
        "questions": ["What is the currency of {s}?", "What money is used in {s}?"],
        "extra": ["euro", "franc", "krona", "dinar"],
    },
    "count": {
        "facts": {"a spider": "8", "an insect": "6", "a dog": "4", "a bird": "2",
                  "an octopus": "8", "a starfish": "5"},
        "statements": ["{s} has {o} legs", "the number of legs of {s} is {o}"],
        "questions": ["How many legs does {s} have?", "How many legs has {s} got?"],
        "extra": ["3", "7", "10", "12"],
    },
}
CONTEXTS = ["In this story, {stmt}.", "Imagine a world where {stmt}.",
            "According to the text, {stmt}.", "Suppose that {stmt}.",
            "In a fictional universe, {stmt}."]
QA = ["Q: {q} A:", "Question: {q} Answer:"]


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def conflict(n: int = 300, seed: int = EVAL_SEED) -> list[Item]:
    """``n`` distinct counterfactual-context questions (at most a few thousand exist)."""
    rng = _rng("conflict", seed)
    relations = sorted(RELATIONS)
    items: list[Item] = []
    seen: set[str] = set()
    attempts = 0
    while len(items) < n:
        attempts += 1
        if attempts > 200 * max(n, 1):
            raise ValueError(f"cannot draw {n} distinct conflict items")
        rel = RELATIONS[rng.choice(relations)]
        subject = rng.choice(sorted(rel["facts"]))
        truth = rel["facts"][subject]
        pool = sorted({*rel["facts"].values(), *rel["extra"]} - {truth})
        fake = rng.choice(pool)
        stmt = rng.choice(rel["statements"]).format(s=subject, o=fake)
        context = rng.choice(CONTEXTS).format(stmt=stmt)
        question = _cap(rng.choice(rel["questions"]).format(s=subject))
        qa = rng.choice(QA).format(q=question)
        prompt = f"{context} {qa}"
        if prompt in seen:
            continue
        seen.add(prompt)
        items.append({
            "id": f"conflict-{seed}-{len(items)}",
            "prompt": prompt,
            "answer": " " + fake,
            "task": "conflict",
            "context": context,
            "question": question,
            "prompt_no_context": qa,
            "memory_answer": " " + truth,
        })
    return items


# -- closed-book questions, split by fact -----------------------------------------

# facts (relation, subject) held out for validation: choices a row makes (e.g. DoLa's
# layer bucket) are made on these, never on the test facts
CLOSED_BOOK_VALIDATION_FACTS = 14
CLOSED_BOOK_SPLITS = ("test", "validation")


def closed_book_facts(split: str) -> list[tuple[str, str]]:
    """The ``(relation, subject)`` facts of ``split``: a fixed seeded draw of
    :data:`CLOSED_BOOK_VALIDATION_FACTS` facts is ``validation``, the rest ``test``."""
    if split not in CLOSED_BOOK_SPLITS:
        raise ValueError(f"unknown closed-book split {split!r} (known: "
                         f"{', '.join(CLOSED_BOOK_SPLITS)})")
    every = [(r, s) for r in sorted(RELATIONS) for s in sorted(RELATIONS[r]["facts"])]
    held = set(_rng("closed_book/split", 0).sample(every, CLOSED_BOOK_VALIDATION_FACTS))
    return [f for f in every if (f in held) == (split == "validation")]


def closed_book(n: int, seed: int = EVAL_SEED, split: str = "test") -> list[Item]:
    """``n`` distinct closed-book questions on the facts of ``split`` (every question
    template of every fact, shuffled by ``seed``); ``answer`` is the real-world fact."""
    questions = [(r, s, q) for r, s in closed_book_facts(split)
                 for q in RELATIONS[r]["questions"]]
    if n > len(questions):
        raise ValueError(f"only {len(questions)} distinct {split} closed-book questions, "
                         f"asked {n}")
    rng = _rng(f"closed_book/{split}", seed)
    rng.shuffle(questions)
    prefix = "facts" if split == "test" else f"facts-{split}"
    items: list[Item] = []
    for i, (relation, subject, template) in enumerate(questions[:n]):
        question = _cap(template.format(s=subject))
        items.append({"id": f"{prefix}-{seed}-{i}", "question": question,
                      "prompt": rng.choice(QA).format(q=question),
                      "answer": " " + RELATIONS[relation]["facts"][subject],
                      "task": "facts", "fact": f"{relation}/{subject}", "split": split})
    return items


# -- held-out plain text ---------------------------------------------------------

def text(n: int, seed: int = TEXT_SEED) -> list[Item]:
    """``n`` plain-text passages for perplexity (worked sums, JSON sentences, facts)."""
    rng = _rng("text", seed)
    items = []
    for i in range(n):
        kind = rng.choice(["arithmetic", "json", "fact"])
        sub = rng.randrange(1 << 30)
        if kind == "arithmetic":
            item = arithmetic(1, seed=-1 - sub)[0]  # negative seeds: no other split uses them
            passage = item["prompt"] + item["answer"]
        elif kind == "json":
            item = json_extraction(1, seed=-1 - sub)[0]
            passage = item["prompt"] + item["answer"]
        else:
            rel = RELATIONS[rng.choice(sorted(RELATIONS))]
            subject = rng.choice(sorted(rel["facts"]))
            stmt = rng.choice(rel["statements"]).format(s=subject, o=rel["facts"][subject])
            passage = _cap(stmt) + "."
        items.append({"id": f"text-{seed}-{i}", "prompt": "", "answer": passage,
                      "task": "text", "text": passage, "kind": kind})
    return items


# -- dispatch and checking --------------------------------------------------------

GENERATORS: dict[str, Callable[..., list[Item]]] = {
    "arithmetic": arithmetic,
    "json": json_extraction,
    "conflict": conflict,
    "text": text,
}
TASKS = tuple(GENERATORS)


def generate(task: str, n: int, seed: int = EVAL_SEED, **kwargs: Any) -> list[Item]:
    try:
        generator = GENERATORS[task]
    except KeyError:
        raise ValueError(f"unknown task {task!r}; known: {', '.join(TASKS)}") from None
    if task == "text" and seed == EVAL_SEED:
        seed = TEXT_SEED
    return generator(n, seed=seed, **kwargs)


_ANSWER = re.compile(r"####\s*(-?\d+(?:\.\d+)?)")


def extract_number(output_text: str) -> float | None:
    """The number after the last ``####`` in ``output_text``, or None."""
    found = _ANSWER.findall(output_text)
    return float(found[-1]) if found else None


def extract_json(output_text: str) -> Any:
    """The first JSON object in ``output_text``; raises ValueError if there is none."""
    start = output_text.find("{")
    if start < 0:
        raise ValueError("no JSON object")
    value, _ = json.JSONDecoder().raw_decode(output_text[start:])
    return value


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True)  # 34 != 34.0 != "34", unlike ==


def check(task: str, output_text: str, item: Item) -> bool:
    """Whether ``output_text`` (what followed the prompt) answers ``item``.

    arithmetic: the last ``#### N`` equals the result; json: the first JSON
    object equals the record (types included, key order free); conflict: the
    context answer occurs in the output (case-insensitive); text: equality
    after stripping whitespace.
    """
    if task == "arithmetic":
        got = extract_number(output_text)
        return got is not None and got == item["result"]
    if task == "json":
        try:
            parsed = extract_json(output_text)
        except ValueError:
            return False
        return _canonical(parsed) == _canonical(json.loads(item["answer"]))
    if task == "conflict":
        return item["answer"].strip().lower() in output_text.lower()
    if task == "text":
        return output_text.strip() == item["answer"].strip()
    raise ValueError(f"unknown task {task!r}; known: {', '.join(TASKS)}")
