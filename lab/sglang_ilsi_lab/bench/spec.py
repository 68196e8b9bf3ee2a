"""What the bench measures: task specs and method specs, and their registries.

A **task** says which items to run (a seeded generator), on which catalog
models by default, how to turn an item into a prompt, and how to score one
output (a dict of named metrics, one of them primary). A **method spec** is a
row of the grid: the ``ilsi`` object a request carries (or none), its sampling
temperature, which tasks it applies to, the rows it is compared with
(``baselines``), the metric and direction of the effect its paper reports,
and that published effect in words (for ``docs/evidence.md``).

Built-in specs live in :mod:`sglang_ilsi_lab.bench.specs` (one module per
family, discovered automatically); a method family added later registers its
rows by dropping a module there, through the ``sglang_ilsi_lab.bench`` entry-point
group (a callable run once at load), or with ``sglang-ilsi bench --spec
FILE.py``; none of these edits the harness::

    from sglang_ilsi_lab.bench.spec import MethodSpec, Published, register_method

    register_method(MethodSpec(
        name="contrastive", family="contrastive", tasks=("open_text",),
        ilsi={"method": "contrastive", "alpha": 0.1}, temperature=0.0,
        baselines=("greedy",), metric="diversity",
        server_args=lambda model: ["--ilsi-aux-model", amateur_path(model)],
        published=Published("Li et al. 2023, Contrastive Decoding",
                            "diversity up vs greedy on open-ended text"),
    ))
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import logging
import pkgutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "sglang_ilsi_lab.bench"

Item = dict[str, Any]


@dataclass
class Generation:
    """One item's outcome, as a task's scorer and a method's hooks see it."""

    text: str
    output_ids: list[int]
    prompt_ids: list[int]
    meta: dict[str, Any]  # the response's meta_info (ilsi report under "ilsi")
    latency_s: float
    output_logprobs: list[float] | None = None  # unmodified model logprobs of the output

    @property
    def report(self) -> dict[str, Any]:
        return self.meta.get("ilsi") or {}


def chosen_sample(samples: Sequence[Generation], best: int, report: dict[str, Any]
                  ) -> Generation:
    """``samples[best]`` as a runner's answer when a bench runner drew all ``samples``
    and picked one (by running them in the sandbox): its ``ilsi`` report is ``report``
    with ``chosen`` and a ``cost`` counting every sample's tokens beside its own."""
    chosen = samples[best]
    tokens = [float(g.meta.get("completion_tokens", len(g.output_ids))) for g in samples]
    meta = dict(chosen.meta)
    meta["ilsi"] = {**report, "chosen": best,
                    "cost": {**report.get("cost", {}), "samples": len(samples),
                             "extra_forward_tokens": sum(tokens) - tokens[best]}}
    return Generation(text=chosen.text, output_ids=chosen.output_ids,
                      prompt_ids=chosen.prompt_ids, meta=meta, latency_s=chosen.latency_s)


@dataclass(frozen=True)
class TaskSpec:
    """A task: seeded items, default models, prompt building and scoring.

    ``items(n, seed)`` returns ``n`` items; ``score(item, generation)`` returns
    the item's metrics (floats; booleans count as 0/1; NaN: not defined for
    this item). ``higher_is_better`` gives every metric's direction. ``chat``
    chooses the prompt form: True wraps ``prompt(item, True)`` as one user
    message through the model's chat template, False sends ``prompt(item,
    False)`` as plain text, None decides by whether the model has a chat
    template. ``quick_models`` are the models ``--quick`` uses (default:
    ``models``). ``needs_logprobs`` asks the harness
    to score each output with the unmodified model (one extra prefill-only
    request) and fill ``Generation.output_logprobs``.
    """

    name: str
    description: str
    models: tuple[str, ...]
    items: Callable[[int, int], list[Item]]
    score: Callable[[Item, Generation], dict[str, float]]
    primary: str
    higher_is_better: Mapping[str, bool]
    max_new_tokens: int = 48
    prompt: Callable[[Item, bool], str] = field(default=lambda item, chat: item["prompt"])
    chat: bool | None = None
    quick_models: tuple[str, ...] | None = None
    needs_logprobs: bool = False
    items_default: int = 60
    items_quick: int = 6
    seed: int = 1
    sampling: Mapping[str, Any] = field(default_factory=dict)  # e.g. stop sequences
    version: int = 1  # bump when prompts or scoring change, so old cells are not reused


CLAIM_KINDS = ("effect", "speed", "equivalence", "non_inferiority", "by_construction")
MARGIN_KINDS = ("equivalence", "non_inferiority")  # claims judged against a stated margin
COST_MEASURES = ("forward_tokens", "seconds_per_item")


@dataclass(frozen=True)
class Published:
    """The published effect a row mirrors, in words, with its source, and the kind of
    claim it is, which decides the test its verdict applies
    (:mod:`sglang_ilsi_lab.bench.verdicts`):

    - ``effect``: the row changes the metric in the direction ``expected_sign`` gives;
      judged on the sign of the effect's CI.
    - ``speed``: the same outputs in less wall time; judged on the time ratio to the
      comparison row, after checking that the metric's effect CI lies within
      ±``margin`` (0: identical).
    - ``equivalence``: the same quality at a lower cost; the effect CI must lie within
      ±``margin`` (stated here, before the run) and the ``cost_measure`` ratio be below 1.
    - ``non_inferiority``: the same or better quality at a lower cost ("equal or higher
      accuracy with fewer tokens"); the effect CI's lower end must lie above −``margin``
      and the ``cost_measure`` ratio be below 1.
    - ``by_construction``: the metric moves by construction under this method (e.g.
      perplexity under the same model after truncating its tail): shown, never counted
      as evidence.

    ``margin`` is the tolerance on the metric's effect, in the metric's units.
    """

    source: str  # paper, year
    claim: str  # what was reported, in that paper's setting
    kind: str = "effect"
    margin: float | None = None
    cost_measure: str = "forward_tokens"

    def __post_init__(self) -> None:
        if self.kind not in CLAIM_KINDS:
            raise SpecError(f"published claim of {self.source!r}: kind {self.kind!r} is not "
                            f"one of {', '.join(CLAIM_KINDS)}")
        if self.kind in MARGIN_KINDS and (self.margin is None or self.margin <= 0):
            raise SpecError(f"published claim of {self.source!r}: an {self.kind} claim "
                            "needs a margin > 0, stated in advance")
        if self.margin is not None and self.margin < 0:
            raise SpecError(f"published claim of {self.source!r}: margin must be >= 0")
        if self.cost_measure not in COST_MEASURES:
            raise SpecError(f"published claim of {self.source!r}: cost_measure "
                            f"{self.cost_measure!r} is not one of {', '.join(COST_MEASURES)}")


IlsiSpec = dict[str, Any] | None | Callable[[str], dict[str, Any] | None]


@dataclass(frozen=True)
class MethodSpec:
    """A row of the grid.

    ``ilsi`` is the request's ``custom_params.ilsi`` object (None: plain SGLang),
    or a callable ``task name -> object`` when it differs per task.
    ``baselines`` name other rows on the same task and model; the first is the
    comparison the evidence table reports. The effect is the paired difference
    ``metric(row) - metric(baseline)`` on the same items; ``expected_sign`` is
    what the paper reports for it: +1 the row improves ``metric`` (raises it,
    or lowers it where lower is better), -1 it makes it worse, 0 no change.
    ``metric`` may be a mapping task name -> metric.
    ``server_args(model)`` adds launch flags (aux/draft models...): rows with
    different flags get different servers. ``metrics_hook(item, gen)`` adds
    per-item metrics read from the generation (e.g. speculative acceptance);
    ``transform_item`` rewrites an item before prompting (e.g. drop a context).
    ``runner(client, task, item, prompt_ids, row)`` replaces the single
    ``/generate`` call for rows that need a loop of their own (e.g. sample N,
    execute, pick); it returns the chosen :class:`Generation`, with its cost in
    ``meta["ilsi"]["cost"]`` like a server-side method's report.
    ``chosen_on_test`` says, when not empty, which of the row's settings was chosen by
    looking at its test items: its verdict is then withheld ("pending rerun").
    """

    name: str
    family: str
    tasks: tuple[str, ...]
    ilsi: IlsiSpec = None
    temperature: float = 0.0
    sampling: Mapping[str, Any] = field(default_factory=dict)
    baselines: tuple[str, ...] = ()
    metric: str | Mapping[str, str] | None = None  # None: the task's primary metric
    expected_sign: int = 1
    published: Published | Mapping[str, Published] | None = None  # or per task name
    notes: str | Mapping[str, str] = ""  # or per task name
    server_args: Sequence[str] | Callable[[str], Sequence[str]] = ()
    metrics_hook: Callable[[Item, Generation], dict[str, float]] | None = None
    transform_item: Callable[[Item], Item] | None = None
    runner: Callable[..., Generation] | None = None
    # the catalog models this row can run on (None: any), e.g. those with a
    # known amateur; other models' grids leave the row out
    models: tuple[str, ...] | None = None
    quick: bool = False  # part of ``--quick``
    evidence: bool = True  # part of the default (evidence) grid
    chosen_on_test: str = ""

    def ilsi_for(self, task: str) -> dict[str, Any] | None:
        value = self.ilsi(task) if callable(self.ilsi) else self.ilsi
        return json.loads(json.dumps(value)) if value is not None else None

    def server_args_for(self, model: str) -> list[str]:
        args = self.server_args(model) if callable(self.server_args) else self.server_args
        return [str(a) for a in args]

    def notes_for(self, task: str) -> str:
        return self.notes.get(task, "") if isinstance(self.notes, Mapping) else self.notes

    def published_for(self, task: str) -> Published | None:
        if isinstance(self.published, Mapping):
            return self.published.get(task)
        return self.published

    def metric_for(self, task: TaskSpec) -> str:
        if isinstance(self.metric, Mapping):
            return self.metric.get(task.name, task.primary)
        return self.metric or task.primary


_TASKS: dict[str, TaskSpec] = {}
_METHODS: dict[str, MethodSpec] = {}
_loaded = False


class SpecError(ValueError):
    """A spec is malformed or names something unknown."""


def register_task(task: TaskSpec) -> TaskSpec:
    if task.name in _TASKS and _TASKS[task.name] is not task:
        raise SpecError(f"bench task {task.name!r} is already registered")
    if task.primary not in task.higher_is_better:
        raise SpecError(f"bench task {task.name!r}: primary metric {task.primary!r} has no "
                        "direction in higher_is_better")
    _TASKS[task.name] = task
    return task


def register_method(method: MethodSpec) -> MethodSpec:
    if method.name in _METHODS and _METHODS[method.name] is not method:
        raise SpecError(f"bench method {method.name!r} is already registered")
    if method.expected_sign not in (-1, 0, 1):
        raise SpecError(f"bench method {method.name!r}: expected_sign must be -1, 0 or 1")
    if not method.tasks:
        raise SpecError(f"bench method {method.name!r} applies to no task")
    claims = [method.published_for(t) for t in method.tasks]
    if method.expected_sign == 0 and any(c is not None and c.kind == "effect" for c in claims):
        raise SpecError(f"bench method {method.name!r}: a 'no change' claim "
                        "(expected_sign=0) is a speed or equivalence claim: declare its kind "
                        "and margin in Published")
    _METHODS[method.name] = method
    return method


def load(spec_files: Sequence[str] = ()) -> None:
    """Import the built-in specs, entry points and ``spec_files`` (once each)."""
    global _loaded
    if not _loaded:
        _loaded = True
        from sglang_ilsi_lab.bench import specs

        for info in sorted(pkgutil.iter_modules(specs.__path__), key=lambda m: m.name):
            importlib.import_module(f"{specs.__name__}.{info.name}")
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            try:
                obj = ep.load()
                if callable(obj):
                    obj()
            except Exception:
                logger.exception("sglang-ilsi bench: failed to load entry point %s", ep.name)
    for path in spec_files:
        load_spec_file(path)


def load_spec_file(path: str) -> None:
    file = Path(path)
    if not file.is_file():
        raise SpecError(f"--spec: no such file: {path}")
    from sglang_ilsi.registry import import_file

    import_file(file, "sglang_ilsi_bench_spec_"
                + hashlib.sha256(str(file.resolve()).encode()).hexdigest()[:8])


def tasks() -> dict[str, TaskSpec]:
    load()
    return dict(_TASKS)


def methods() -> dict[str, MethodSpec]:
    load()
    return dict(_METHODS)


def check_references() -> None:
    """Every baseline a row names exists and shares at least one task with it."""
    all_tasks, all_methods = tasks(), methods()
    for m in all_methods.values():
        for t in m.tasks:
            if t not in all_tasks:
                raise SpecError(f"bench method {m.name!r} names unknown task {t!r}")
        for b in m.baselines:
            if b not in all_methods:
                raise SpecError(f"bench method {m.name!r} names unknown baseline {b!r}")
