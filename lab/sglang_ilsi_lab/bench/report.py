"""Summaries of a run: ``results.json``, ``results.md`` and ``results.png``.

Per cell: every metric's mean with a 95% bootstrap CI, the effect against
each baseline row (paired difference on the same items, with its CI, the
per-item latency ratio with its paired CI, and for the first baseline the
verdict on the row's published claim, by the claim's kind: see
:mod:`sglang_ilsi_lab.bench.verdicts`), and the cost: tokens generated
(all samples), forward tokens (generated + the method's extra and auxiliary
forwards, from the ``ilsi`` report), samples, latency and wall time per item,
and cost ratios against the first baseline.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sglang_ilsi_lab.bench import stats, verdicts
from sglang_ilsi_lab.bench.runner import Cell, RunFile, machine
from sglang_ilsi_lab.bench.spec import MethodSpec, Published

COST_KEYS = ("completion_tokens", "forward_tokens", "samples", "extra_forward_tokens",
             "aux_model_tokens", "prompt_tokens", "latency_s")
SCHEMA_VERSION = 1


def _mean(values: Sequence[float | None]) -> float | None:
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return sum(finite) / len(finite) if finite else None


def _series(records: list[dict], metric: str) -> list[float]:
    out = []
    for r in records:
        v = (r.get("metrics") or {}).get(metric)
        out.append(float(v) if v is not None else math.nan)
    return out


def summarize(cells: list[Cell], run: RunFile, *, quick: bool,
              command: str | None = None) -> dict[str, Any]:
    """The results document for ``cells`` from the run file's records."""
    per_cell: dict[str, list[dict]] = {}
    for cell in cells:
        recs = run.items.get(cell.fingerprint, {})
        ids = [it["id"] for it in cell.task.items(cell.items, cell.seed)]
        per_cell[cell.key] = [recs[i] for i in ids if i in recs]
    by_key = {c.key: c for c in cells}
    costs: dict[str, dict[str, float | None]] = {}
    for cell in cells:
        recs = per_cell[cell.key]
        ok = [r for r in recs if r.get("error") is None]
        cost: dict[str, float | None] = {
            k: _mean([r.get("latency_s") if k == "latency_s" else (r.get("cost") or {}).get(k)
                      for r in ok]) for k in COST_KEYS}
        seconds = float(run.cells.get(cell.fingerprint, {}).get("seconds", 0.0))
        cost["seconds"] = seconds
        cost["seconds_per_item"] = seconds / len(recs) if recs else None
        costs[cell.key] = cost
    out_cells = []
    for cell in cells:
        recs = per_cell[cell.key]
        ok = [r for r in recs if r.get("error") is None]
        metric_names = sorted({k for r in ok for k in (r.get("metrics") or {})})
        metrics = {m: stats.mean_ci(_series(recs, m)) for m in metric_names}
        cost = costs[cell.key]
        metric = cell.method.metric_for(cell.task)
        higher = cell.task.higher_is_better.get(metric, True)
        effects = []
        for rank, b in enumerate(cell.method.baselines):
            base_key = f"{cell.task.name}/{cell.model}/{b}"
            if base_key not in by_key:
                continue
            base_recs = {r["item"]: r for r in per_cell[base_key]}
            pairs = [(r, base_recs[r["item"]]) for r in recs if r["item"] in base_recs]
            eff = stats.paired_diff_ci(_series([p[0] for p in pairs], metric),
                                       _series([p[1] for p in pairs], metric))
            ratios = {}
            for k in ("forward_tokens", "seconds_per_item"):
                mine, theirs = cost.get(k), costs[base_key].get(k)
                ratios[k] = (mine / theirs) if mine is not None and theirs else None
            effect = {"baseline": b, "metric": metric, "higher_is_better": higher, **eff,
                      "expected_sign": cell.method.expected_sign, "cost_ratio": ratios,
                      "time_ratio": stats.paired_ratio_ci(
                          [_latency(p[0]) for p in pairs], [_latency(p[1]) for p in pairs])}
            # the published claim is about the first comparison only
            effect.update(judgement(effect, cell.method, cell.task.name) if rank == 0
                          else {"verdict": "n/a"})
            effects.append(effect)
        pub = cell.method.published_for(cell.task.name)
        out_cells.append({
            "key": cell.key, "task": cell.task.name, "model": cell.model,
            "method": cell.method.name, "family": cell.method.family,
            "items": cell.items, "ok": len(ok), "errors": len(recs) - len(ok),
            "error_examples": sorted({r["error"] for r in recs if r.get("error")})[:3],
            "config": cell.config(), "metric": metric, "metrics": metrics,
            "effects": effects, "cost": cost,
            "published": published_record(pub),
            "notes": cell.method.notes_for(cell.task.name),
            "examples": [r.get("text", "") for r in ok[:2]],
        })
    return {"schema": SCHEMA_VERSION, "bench": "sglang-ilsi bench", "quick": quick,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "command": command, "machine": machine(),
            "confidence": stats.CONFIDENCE, "bootstrap_resamples": stats.RESAMPLES,
            "run_file": str(run.path), "cells": out_cells}


def _latency(record: dict) -> float:
    value = record.get("latency_s") if record.get("error") is None else None
    return float(value) if value is not None else math.nan


def published_record(pub: Published | None) -> dict[str, Any] | None:
    """The claim as results.json stores it: words, source, kind and margin."""
    if pub is None:
        return None
    return {"source": pub.source, "claim": pub.claim, "kind": pub.kind, "margin": pub.margin,
            "cost_measure": pub.cost_measure}


def judgement(effect: dict[str, Any], method: MethodSpec, task: str) -> dict[str, Any]:
    """``verdict`` (the outcome), ``claim_kind`` and ``verdict_test`` (the test applied,
    with its numbers) of a row's first comparison, from the row's declared claim."""
    v = verdicts.judge(effect, method.published_for(task), expected_sign=method.expected_sign,
                       higher_is_better=effect["higher_is_better"],
                       chosen_on_test=method.chosen_on_test)
    return {"verdict": v.outcome, "claim_kind": v.kind, "verdict_test": v.test}


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def fmt(value: float | None, digits: int = 3) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:.{digits}f}"


def fmt_ci(d: dict, key: str = "mean", digits: int = 3) -> str:
    if d.get(key) is None:
        return "-"
    return f"{fmt(d[key], digits)} [{fmt(d['ci_low'], digits)}, {fmt(d['ci_high'], digits)}]"


def markdown(results: dict[str, Any]) -> str:
    lines = [f"# sglang-ilsi bench{' (quick)' if results['quick'] else ''}", "",
             f"{results['created']}; {results['machine']['cpus']} CPUs; "
             f"sglang {results['machine']['sglang']}; 95% bootstrap CIs "
             f"({results['bootstrap_resamples']} resamples, paired for effects).", ""]
    tasks = list(dict.fromkeys(c["task"] for c in results["cells"]))
    for task in tasks:
        lines += [f"## {task}", "",
                  "| model | row | metric | value [95% CI] | effect vs baseline [95% CI] | "
                  "verdict | fwd tokens/item | samples | s/item | errors |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for c in (c for c in results["cells"] if c["task"] == task):
            eff = c["effects"][0] if c["effects"] else None
            eff_text = (f"{fmt_ci(eff, 'diff')} vs {eff['baseline']}" if eff else "")
            lines.append(
                f"| {c['model']} | {c['method']} | {c['metric']} | "
                f"{fmt_ci(c['metrics'].get(c['metric'], {}))} | {eff_text} | "
                f"{eff['verdict'] if eff else ''} | {fmt(c['cost']['forward_tokens'], 1)} | "
                f"{fmt(c['cost']['samples'], 1)} | {fmt(c['cost']['seconds_per_item'], 3)} | "
                f"{c['errors']} |")
        lines.append("")
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> Path | None:
    """Effect against cost: per (task, metric), the metric with its CI against
    forward tokens and wall seconds per item. None if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        return None
    panels: list[tuple[str, str]] = []
    for c in results["cells"]:
        for key in ((c["task"], c["metric"]),):
            if key not in panels:
                panels.append(key)
    fig, axes = plt.subplots(len(panels), 2, figsize=(11, 3.4 * len(panels)), squeeze=False)
    for row, (task, metric) in enumerate(panels):
        cells = [c for c in results["cells"] if c["task"] == task and metric in c["metrics"]
                 and c["metrics"][metric]["mean"] is not None]
        for col, (cost_key, label) in enumerate((("forward_tokens", "forward tokens per item"),
                                                 ("seconds_per_item", "wall seconds per item"))):
            ax = axes[row][col]
            xs = [c["cost"].get(cost_key) or 0 for c in cells]
            xs = [x for x in xs if x > 0]
            for c in cells:
                m, x = c["metrics"][metric], c["cost"].get(cost_key)
                if x is None or x <= 0:
                    continue
                err = [[m["mean"] - m["ci_low"]], [m["ci_high"] - m["mean"]]]
                marker = "s" if c["family"] == "baseline" else "o"
                ax.errorbar([x], [m["mean"]], yerr=err, fmt=marker, capsize=3)
                ax.annotate(f"{c['method']} ({c['model'].split('-')[0]})", (x, m["mean"]),
                            fontsize=7, xytext=(4, 2), textcoords="offset points")
            if xs and max(xs) > 5 * min(xs):  # log only where costs span a wide range
                ax.set_xscale("log")
                ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            ax.set_xlabel(label)
            ax.set_ylabel(metric)
            ax.set_title(f"{task}: {metric}", fontsize=9)
            ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=110)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        Path(tmp).unlink(missing_ok=True)
    return path


def write(results: dict[str, Any], out_dir: Path) -> dict[str, str | None]:
    """Write results.json, results.md and results.png into ``out_dir``."""
    png = plot(results, out_dir / "results.png")
    files = {"json": str(out_dir / "results.json"), "markdown": str(out_dir / "results.md"),
             "plot": str(png) if png else None}
    results["files"] = files
    _atomic_write(out_dir / "results.md", markdown(results).encode())
    _atomic_write(out_dir / "results.json", json.dumps(results, indent=2).encode())
    return files
