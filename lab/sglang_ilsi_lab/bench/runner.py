"""The grid: plan the cells (task x model x method), run them, resume.

Every finished item is appended at once to ``OUT/run.jsonl`` (one JSON record
per line) and a cell ends with a ``cell`` record; a cell is identified by a
fingerprint of everything that changes its outcome (request, temperature,
items, seed, launch flags). Re-running the same command reads the file back,
skips finished cells, and runs only the missing items of an interrupted one;
a server is started only for a model that still has work.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from sglang_ilsi_lab.bench import spec as specs
from sglang_ilsi_lab.bench.client import BenchClient, RequestFailedError, check_reachable
from sglang_ilsi_lab.bench.spec import Generation, Item, MethodSpec, TaskSpec

RUN_FILE = "run.jsonl"
TEXT_KEEP = 400  # characters of each output kept in the run file


class BenchError(RuntimeError):
    """The bench cannot run as asked; the message says why."""


@dataclass(frozen=True)
class Cell:
    task: TaskSpec
    model: str
    method: MethodSpec
    items: int
    seed: int

    @property
    def key(self) -> str:
        return f"{self.task.name}/{self.model}/{self.method.name}"

    def config(self) -> dict[str, Any]:
        config = {"ilsi": self.method.ilsi_for(self.task.name),
                "temperature": self.method.temperature,
                "sampling": dict(self.method.sampling),
                "max_new_tokens": self.task.max_new_tokens,
                "server_args": self.method.server_args_for(self.model),
                "items": self.items, "seed": self.seed,
                "transformed": self.method.transform_item is not None,
                "logprobs": self.task.needs_logprobs}
        if self.task.sampling:  # only when set, so other cells' fingerprints stay put
            config["task_sampling"] = dict(self.task.sampling)
        if self.task.version != 1:
            config["task_version"] = self.task.version
        if self.method.runner is not None:
            runner = self.method.runner
            config["runner"] = f"{runner.__module__}.{runner.__qualname__}"
        return config

    @property
    def fingerprint(self) -> str:
        payload = json.dumps({"key": self.key, **self.config()}, sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def server_key(self) -> tuple[str, tuple[str, ...]]:
        return self.model, tuple(self.method.server_args_for(self.model))


def _split(values: Iterable[str] | None) -> list[str]:
    out: list[str] = []
    for v in values or ():
        out += [x.strip() for x in v.split(",") if x.strip()]
    return out


def plan(*, tasks: Sequence[str] | None = None, models: Sequence[str] | None = None,
         methods: Sequence[str] | None = None, quick: bool = False,
         items: int | None = None, seed: int | None = None) -> list[Cell]:
    """The cells to run, baselines of the chosen rows included; checks every name."""
    from sglang_ilsi_lab.models import catalog

    all_tasks, all_methods = specs.tasks(), specs.methods()
    specs.check_references()
    task_names, model_names, method_names = _split(tasks), _split(models), _split(methods)
    for name in task_names:
        if name not in all_tasks:
            raise BenchError(f"unknown task {name!r}; known tasks: {', '.join(all_tasks)}")
    for name in method_names:
        if name not in all_methods:
            raise BenchError(f"unknown method row {name!r}; known rows: {', '.join(all_methods)}")
    for name in model_names:
        if name not in catalog.CATALOG:
            raise BenchError(f"unknown model {name!r}; known models: "
                             f"{', '.join(catalog.CATALOG)}")
    cells: list[Cell] = []
    for task in (all_tasks[n] for n in (task_names or all_tasks)):
        defaults = task.quick_models if quick and task.quick_models is not None else task.models
        chosen = [m for m in defaults if not model_names or m in model_names]
        if not chosen and model_names and task_names:
            chosen = list(model_names)  # both named explicitly: run what was asked
        rows = [m for m in all_methods.values() if task.name in m.tasks and (
            m.name in method_names if method_names else (m.quick if quick else m.evidence))]
        wanted = {m.name for m in rows}
        for m in list(rows):  # the rows' baselines, so every effect can be computed
            for b in m.baselines:
                if b not in wanted and task.name in all_methods[b].tasks:
                    wanted.add(b)
                    rows.append(all_methods[b])
        n = items or (task.items_quick if quick else task.items_default)
        for model in chosen:
            for m in sorted(rows, key=lambda r: (r.family != "baseline", r.name)):
                if m.models is not None and model not in m.models:
                    continue  # e.g. no amateur is known for this model
                cells.append(Cell(task, model, m, n, task.seed if seed is None else seed))
    if not cells:
        raise BenchError("the selection leaves no cell to run (check --tasks/--models/--methods)")
    return cells


# -- the run file ------------------------------------------------------------------

class RunFile:
    """Append-only JSONL of item and cell records, safe for concurrent appends."""

    def __init__(self, path: Path):
        self.path = path
        self.lock = threading.Lock()
        self.items: dict[str, dict[str, dict[str, Any]]] = {}
        self.cells: dict[str, dict[str, Any]] = {}
        if path.is_file():
            text = path.read_text(encoding="utf-8")
            for line in text.splitlines():
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue  # a line cut short by an interruption
                self._index(rec)
            if text and not text.endswith("\n"):  # end the torn line, so appends stay whole
                with open(path, "a", encoding="utf-8") as f:
                    f.write("\n")

    def _index(self, rec: dict[str, Any]) -> None:
        if rec.get("type") == "item":
            self.items.setdefault(rec["fingerprint"], {})[rec["item"]] = rec
        elif rec.get("type") == "cell":
            self.cells[rec["fingerprint"]] = rec

    def append(self, rec: dict[str, Any]) -> None:
        line = json.dumps(rec, default=_json_default) + "\n"
        with self.lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(line)
                f.flush()
            self._index(rec)


def _json_default(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)


def _clean(metrics: dict[str, float]) -> dict[str, float | None]:
    return {k: (float(v) if v is not None and math.isfinite(float(v)) else None)
            for k, v in metrics.items()}


# -- running ------------------------------------------------------------------------

def _cost(gen: Generation) -> dict[str, float]:
    cost = gen.report.get("cost") or {}
    completion = float(gen.meta.get("completion_tokens", len(gen.output_ids)))
    extra = float(cost.get("extra_forward_tokens", 0) or 0)
    aux = float(cost.get("aux_model_tokens", 0) or 0)
    return {"completion_tokens": completion, "extra_forward_tokens": extra,
            "aux_model_tokens": aux, "forward_tokens": completion + extra + aux,
            "samples": float(cost.get("samples", 1) or 1),
            "prompt_tokens": float(gen.meta.get("prompt_tokens", len(gen.prompt_ids)))}


def run_item(client: BenchClient, cell: Cell, item: Item) -> dict[str, Any]:
    """One item of a cell -> its run-file record (errors recorded, not raised)."""
    task, method = cell.task, cell.method
    if method.transform_item is not None:
        item = method.transform_item(item)
    record: dict[str, Any] = {"type": "item", "cell": cell.key, "fingerprint": cell.fingerprint,
                              "item": item["id"]}
    try:
        prompt_ids = client.prompt_ids(task.prompt(item, _chat(client, task)), task.chat)
        if method.runner is not None:
            gen = method.runner(client, task, item, prompt_ids, method)
        else:
            gen = client.generate(prompt_ids, max_new_tokens=task.max_new_tokens,
                                  temperature=method.temperature,
                                  ilsi=method.ilsi_for(task.name),
                                  sampling={**task.sampling, **method.sampling})
        if task.needs_logprobs:
            gen.output_logprobs = client.output_logprobs(prompt_ids, gen.output_ids)
        metrics = dict(task.score(item, gen))
        if method.metrics_hook is not None:
            metrics.update(method.metrics_hook(item, gen))
        record.update(metrics=_clean(metrics), cost=_cost(gen), latency_s=gen.latency_s,
                      text=gen.text[:TEXT_KEEP], error=None)
    except RequestFailedError as exc:
        record.update(metrics={}, cost={}, latency_s=None, text="", error=str(exc))
    return record


def _chat(client: BenchClient, task: TaskSpec) -> bool:
    return client.has_chat_template if task.chat is None else task.chat


class _Progress:
    """tqdm when installed (and wanted), else a line every 25%."""

    def __init__(self, total: int, initial: int, desc: str, enabled: bool):
        self.bar = None
        self.total, self.count, self.desc, self.enabled = total, initial, desc, enabled
        self.next_mark = 0.25
        if enabled:
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total, initial=initial, desc=desc, unit="item",
                                leave=True, file=sys.stderr, dynamic_ncols=True)
            except ImportError:
                print(f"[bench] {desc}: {initial}/{total}", file=sys.stderr)

    def update(self) -> None:
        self.count += 1
        if self.bar is not None:
            self.bar.update(1)
        elif self.enabled and self.count >= self.next_mark * self.total:
            print(f"[bench] {self.desc}: {self.count}/{self.total}", file=sys.stderr)
            self.next_mark += 0.25

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run_cell(client: BenchClient, cell: Cell, run: RunFile, *, concurrency: int,
             progress: bool) -> None:
    items = cell.task.items(cell.items, cell.seed)
    done = run.items.get(cell.fingerprint, {})
    todo = [it for it in items if it["id"] not in done]
    bar = _Progress(len(items), len(items) - len(todo), cell.key, progress)
    start = time.perf_counter()
    try:
        with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
            futures = [pool.submit(run_item, client, cell, it) for it in todo]
            for future in as_completed(futures):
                run.append(future.result())
                bar.update()
    finally:
        bar.close()
    seconds = time.perf_counter() - start
    run.append({"type": "cell", "cell": cell.key, "fingerprint": cell.fingerprint,
                "items": len(items), "resumed_from": len(items) - len(todo),
                "segment_seconds": seconds,
                # a resumed cell's wall time is scaled from the part run last
                "seconds": seconds * len(items) / max(1, len(todo)) if todo else 0.0,
                "concurrency": concurrency})


def catalog_name_for(model_path: str) -> str | None:
    """The catalog model served from ``model_path``, if any."""
    from sglang_ilsi_lab.models import catalog

    target = Path(model_path).resolve()
    for name, entry in catalog.CATALOG.items():
        try:
            if Path(entry.path()).resolve() == target:
                return name
        except OSError:
            continue
    return None


def run_grid(cells: list[Cell], out_dir: Path, *, url: str | None = None,
             concurrency: int = 8, progress: bool = True,
             log: Callable[[str], None] = print) -> RunFile:
    """Run every unfinished cell; return the run file (read back, complete)."""
    from sglang_ilsi_lab.models import catalog
    from sglang_ilsi_lab.server_process import ServerProcess

    if url is not None:
        check_reachable(url)  # before anything is written
        served = BenchClient(url).model_info["model_path"]
        name = catalog_name_for(served)
        wrong = sorted({c.model for c in cells} - {name})
        if wrong:
            what = name or "not a catalog model"
            raise BenchError(f"the server at {url} serves {served} ({what}), but the cells "
                             f"need {', '.join(wrong)}: pass --models {name or '...'} (and "
                             "--tasks) to match what it serves")
    run = RunFile(out_dir / RUN_FILE)
    groups: dict[tuple[str, tuple[str, ...]], list[Cell]] = {}
    for cell in cells:
        groups.setdefault(cell.server_key(), []).append(cell)
    for (model, server_args), group in groups.items():
        pending = [c for c in group if c.fingerprint not in run.cells]
        for c in group:
            if c not in pending:
                log(f"[bench] {c.key}: done (in {run.path}), skipped")
        if not pending:
            continue
        if url is not None:
            client = BenchClient(url)
            client.warm_up(concurrency)
            for cell in pending:
                run_cell(client, cell, run, concurrency=concurrency, progress=progress)
            continue
        path = catalog.prepare(model)
        logs = out_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log(f"[bench] starting SGLang on {model} {' '.join(server_args)}".rstrip())
        server = ServerProcess(path, ["--ilsi", *server_args], ["--dtype", "float32"],
                               log_path=str(logs / f"server-{model}.log"))
        server.start()
        try:
            client = BenchClient(server.base_url)
            client.warm_up(concurrency)
            for cell in pending:
                try:
                    run_cell(client, cell, run, concurrency=concurrency, progress=progress)
                except requests.ConnectionError as exc:
                    raise BenchError(f"{cell.key}: lost the server ({exc}); log tail:\n"
                                     f"{server.log_tail(30)}") from None
        finally:
            server.stop()
    return RunFile(out_dir / RUN_FILE)


def machine() -> dict[str, Any]:
    import platform
    from importlib.metadata import PackageNotFoundError, version

    def ver(dist: str) -> str | None:
        try:
            return version(dist)
        except PackageNotFoundError:
            return None

    return {"platform": platform.platform(), "python": platform.python_version(),
            "cpus": os.cpu_count(), "sglang": ver("sglang"), "sglang_ilsi": ver("sglang-ilsi"),
            "torch": ver("torch")}
