"""Settings chosen on a validation split, never on the test items.

A row with a choice to make (DoLa's candidate-layer bucket, as the paper picks
it per task "on validation data") names its options, each a full ``ilsi``
request object, and a validation item set disjoint from the task's test items.
The first time the row runs against a server, :class:`ValidatedChoice` decodes
every validation item with every option, scores them with the task's own
scorer, and keeps the option with the best mean primary metric (:func:`choose`);
every test item is then decoded with that option. The choice and the
validation means are reported per item as metrics (``chose_<option>``,
``validation_<option>``), so the results show what was chosen and why.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sglang_ilsi_lab.bench.spec import Generation, Item, MethodSpec, TaskSpec


def choose(scores: Mapping[str, Sequence[float]], higher_is_better: bool = True) -> str:
    """The option whose validation scores have the best mean (NaNs ignored); a tie goes
    to the option listed first (the default)."""
    best_name, best_mean = None, -math.inf
    for name, values in scores.items():
        finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
        if not finite:
            continue
        mean = sum(finite) / len(finite)
        signed = mean if higher_is_better else -mean
        if signed > best_mean:
            best_name, best_mean = name, signed
    if best_name is None:
        raise ValueError("no option has a finite validation score")
    return best_name


class ValidatedChoice:
    """One of ``options`` (name -> ``ilsi`` object), chosen once per server on
    ``validation_items()`` (disjoint from the test items), then used for every item."""

    def __init__(self, options: Mapping[str, dict[str, Any]],
                 validation_items: Callable[[], list[Item]], concurrency: int = 8):
        if len(options) < 2:
            raise ValueError("a validated choice needs at least two options")
        self.options = {name: dict(obj) for name, obj in options.items()}
        self.validation_items = validation_items
        self.concurrency = concurrency
        self._lock = threading.Lock()
        self._chosen: dict[str, tuple[str, dict[str, float]]] = {}  # server url -> choice

    def _score_option(self, client: Any, task: TaskSpec, row: MethodSpec,
                      ilsi: dict[str, Any], items: list[Item]) -> list[float]:
        chat = client.has_chat_template if task.chat is None else task.chat

        def one(item: Item) -> float:
            prompt_ids = client.prompt_ids(task.prompt(item, chat), task.chat)
            gen = client.generate(prompt_ids, max_new_tokens=task.max_new_tokens,
                                  temperature=row.temperature, ilsi=dict(ilsi),
                                  sampling={**task.sampling, **row.sampling})
            return float(task.score(item, gen)[task.primary])

        with ThreadPoolExecutor(max_workers=max(1, self.concurrency)) as pool:
            return list(pool.map(one, items))

    def chosen(self, client: Any, task: TaskSpec, row: MethodSpec
               ) -> tuple[str, dict[str, float]]:
        """The option chosen for ``client``'s server and every option's validation mean."""
        key = str(getattr(client, "url", id(client)))
        with self._lock:
            if key not in self._chosen:
                items = self.validation_items()
                scores = {name: self._score_option(client, task, row, ilsi, items)
                          for name, ilsi in self.options.items()}
                higher = task.higher_is_better.get(task.primary, True)
                means = {name: sum(v) / len(v) for name, v in scores.items() if v}
                self._chosen[key] = (choose(scores, higher), means)
            return self._chosen[key]

    def generate(self, client: Any, task: TaskSpec, item: Item, prompt_ids: list[int],
                 row: MethodSpec) -> Generation:
        """A row runner: decode ``item`` with the option chosen on validation."""
        name, means = self.chosen(client, task, row)
        gen = client.generate(prompt_ids, max_new_tokens=task.max_new_tokens,
                              temperature=row.temperature, ilsi=dict(self.options[name]),
                              sampling={**task.sampling, **row.sampling})
        if not isinstance(gen.meta.get("ilsi"), dict):
            gen.meta["ilsi"] = {}
        gen.meta["ilsi"]["validation"] = {"chosen": name, "means": means}
        return gen

    def metrics(self, gen: Generation) -> dict[str, float]:
        """``chose_<option>`` (1 for the chosen one) and ``validation_<option>`` (its
        validation mean), from the report :meth:`generate` attached."""
        record = gen.report.get("validation") or {}
        if not record:
            return {}
        out = {f"chose_{name}": float(name == record["chosen"]) for name in self.options}
        out.update({f"validation_{name}": float(mean)
                    for name, mean in record["means"].items()})
        return out
