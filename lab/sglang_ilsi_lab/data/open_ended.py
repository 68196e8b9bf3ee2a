"""Seeded open-ended writing prompts (for repetition, diversity and fluency).

Contrastive and anti-repetition decoding are evaluated on open-ended
generation, where greedy decoding loops and pure sampling drifts. No such
prompt set ships in a package, so this draws instructions from templates
filled with topics: ``open_ended(n, seed)`` returns ``n`` distinct items
``{"id", "prompt", "answer": "", "task": "open_ended", "topic"}``, the same for
the same ``(n, seed)`` on any machine (its own ``random.Random`` stream).
"""

from __future__ import annotations

import random

from sglang_ilsi_lab.data.synthetic import EVAL_SEED, Item

TEMPLATES = [
    "Write a short story about {t}.",
    "Describe {t} in a few sentences.",
    "Write a paragraph explaining why {t} matters.",
    "Tell me something interesting about {t}.",
    "Write the opening of a news article about {t}.",
    "Write a diary entry about a day spent with {t}.",
    "Explain {t} to a ten-year-old.",
    "Write a short poem about {t}.",
]
TOPICS = [
    "a lighthouse keeper", "the ocean at night", "a lost dog", "an old library", "the moon",
    "a busy train station", "a mountain village", "a robot learning to paint", "autumn leaves",
    "a small bakery", "the first day of school", "a thunderstorm", "a city garden",
    "a friendly dragon", "a desert journey", "a chess tournament", "a snowy forest",
    "a music festival", "an abandoned castle", "a river in spring", "a space station",
    "a street market", "a clockmaker", "a hot air balloon", "an island festival",
    "a quiet museum", "a fishing boat", "a bicycle trip", "a magic key", "a rainy afternoon",
    "honeybees", "volcanoes", "the history of bread", "recycling", "sleep", "friendship",
]


def open_ended(n: int, seed: int = EVAL_SEED) -> list[Item]:
    """``n`` distinct open-ended instructions (at most len(TEMPLATES) * len(TOPICS))."""
    limit = len(TEMPLATES) * len(TOPICS)
    if n > limit:
        raise ValueError(f"at most {limit} distinct open-ended prompts, asked for {n}")
    rng = random.Random(f"sglang-ilsi/open_ended/{seed}")
    pairs = [(t, topic) for t in range(len(TEMPLATES)) for topic in TOPICS]
    rng.shuffle(pairs)
    return [{"id": f"open-{seed}-{i}", "prompt": TEMPLATES[t].format(t=topic), "answer": "",
             "task": "open_ended", "topic": topic} for i, (t, topic) in enumerate(pairs[:n])]
