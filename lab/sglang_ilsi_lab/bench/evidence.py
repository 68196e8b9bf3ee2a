"""``docs/evidence.md``: measured effects next to the published ones.

Regenerate with one command (runs the default grid, resumable, then writes
the document, its plot and the results it was made from)::

    sglang-ilsi bench --evidence            # or: python -m sglang_ilsi_lab.bench.evidence

or re-render from a finished run without running anything::

    python -m sglang_ilsi_lab.bench.evidence --from bench-runs/evidence/results.json

or fold a later partial run into saved results (its task and model blocks replace
the saved ones) and re-render::

    python -m sglang_ilsi_lab.bench.evidence --from docs/evidence.json \
        --merge bench-runs/facts-rerun/results.json

For every row with a published counterpart: the effect (paired difference to
its comparison row on the same items, 95% bootstrap CI), its cost (forward
tokens and wall time relative to the comparison row) and a verdict by the
kind of claim the row's spec declares (:mod:`sglang_ilsi_lab.bench.verdicts`):
``effect`` rows on the CI's side of 0, ``speed`` rows on the time ratio with
the quality checked, ``equivalence`` rows on a margin stated in advance and the
cost ratio, ``by_construction`` rows never. Verdicts, claim kinds and notes are
taken from the current specs at render time, so re-rendering saved results
applies the current tests to the recorded measurements. Rows that do not
reproduce get a diagnosis computed from the measurements (ceiling or floor of
the comparison row, CI width) and the row's own notes. Comparisons the issue
asks for whose method family has not landed yet are listed as such.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from sglang_ilsi_lab.bench import report, verdicts
from sglang_ilsi_lab.bench import spec as specs
from sglang_ilsi_lab.bench.report import _atomic_write, fmt, fmt_ci
from sglang_ilsi_lab.bench.spec import Published

# Comparisons the evidence table is meant to hold, by bench family; a family
# with no rows in the results is reported as not landed yet.
EXPECTED = [
    ("selection", "self-consistency and MBR vs a single sample (arithmetic, lab pair)"),
    ("grammar", "grammar validity vs unconstrained decoding (JSON extraction)"),
    ("truncation sampling", "truncation sampling vs pure sampling (arithmetic, open text)"),
    ("repetition", "anti-repetition decoding vs greedy on open-ended text"),
    ("execution feedback", "best-of-N with execution feedback vs pass@1 (HumanEval)"),
    ("context-aware", "context-aware decoding on the context-vs-memory conflict task"),
    ("contrastive", "contrastive decoding's repetition and diversity on open-ended text"),
    ("layer contrast", "DoLa-style layer contrast vs greedy"),
    ("speculative", "speculative decoding: acceptance and speed-up, identical outputs"),
    ("reward", "reward models and search vs majority voting at the same N (arithmetic, lab pair)"),
]
BOUNDED = ("accuracy", "valid", "exact", "context", "pass", "correct")
OUTCOME_COLUMNS = (verdicts.REPRODUCED, verdicts.INCONCLUSIVE, verdicts.OPPOSITE,
                   verdicts.NOT_SHOWN, verdicts.BY_CONSTRUCTION, verdicts.PENDING_RERUN,
                   verdicts.NO_DATA)
KIND_TEXT = {"effect": "effect", "speed": "speed", "equivalence": "equivalence",
             "non_inferiority": "non-inferiority", "by_construction": "by construction"}


def _cell(results: dict, key: str) -> dict | None:
    return next((c for c in results["cells"] if c["key"] == key), None)


def diagnose(results: dict, cell: dict, effect: dict) -> str:
    """Why a row may not show its published effect, from the numbers themselves."""
    reasons = []
    base = _cell(results, f"{cell['task']}/{cell['model']}/{effect['baseline']}")
    metric = effect["metric"]
    base_value = (base or {}).get("metrics", {}).get(metric, {}).get("mean")
    inconclusive = effect["verdict"] == "inconclusive"
    if inconclusive and base_value is not None and metric in BOUNDED:
        if base_value >= 0.95:
            reasons.append(f"the comparison row is at the ceiling ({metric} "
                           f"{base_value:.2f}): nothing left to gain")
        elif base_value <= 0.05:
            reasons.append(f"the comparison row is at the floor ({metric} {base_value:.2f})")
    oracle = cell["metrics"].get("oracle", {}).get("mean")
    row = cell["metrics"].get(metric, {}).get("mean")
    if oracle is not None and row is not None:
        share = cell["metrics"].get("top_share", {}).get("mean")
        reasons.append(f"some sample is right on {oracle:.0%} of items (pass@N) but the chosen "
                       f"answer on {row:.0%}" + (f"; on average {share:.0%} of the samples give "
                                                 "the same answer" if share is not None else "")
                       + ": the samples' errors are correlated, so voting or ranking recovers "
                         "little of what is there")
    if effect.get("ci_low") is not None and inconclusive:
        width = effect["ci_high"] - effect["ci_low"]
        reasons.append(f"{effect['n']} paired items give a CI {width:.3f} wide around "
                       f"{effect['diff']:+.3f}: too few items to separate an effect that small")
    if effect.get("ci_low") is not None and effect.get("claim_kind") == "equivalence":
        width = effect["ci_high"] - effect["ci_low"]
        reasons.append(f"{effect['n']} paired items give a CI {width:.3f} wide around "
                       f"{effect['diff']:+.3f}: an equivalence margin m needs a CI inside "
                       "±m, so more items (or a wider margin, stated before the run)")
    if cell["errors"]:
        reasons.append(f"{cell['errors']} items failed: {'; '.join(cell['error_examples'])}")
    if cell.get("notes"):
        reasons.append(cell["notes"])
    return "; ".join(reasons) or "no diagnosis from the numbers"


def _claim_from_record(record: dict[str, Any]) -> Published:
    return Published(record["source"], record["claim"], kind=record.get("kind", "effect"),
                     margin=record.get("margin"),
                     cost_measure=record.get("cost_measure", "forward_tokens"))


def judge_results(results: dict[str, Any]) -> dict[str, Any]:
    """``results`` with every row's claim (kind, margin), notes and first-comparison
    verdict taken from the current specs; measurements are left as recorded. A row no
    longer registered keeps its saved claim (as an ``effect`` claim if it has no kind)."""
    all_methods = specs.methods()
    for cell in results["cells"]:
        spec = all_methods.get(cell["method"])
        claim = spec.published_for(cell["task"]) if spec is not None else None
        if claim is None and cell.get("published"):
            claim = _claim_from_record(cell["published"])
        if claim is not None:
            # keep the recorded words, add the kind the current spec declares
            saved = cell.get("published") or {}
            claim = Published(saved.get("source", claim.source), saved.get("claim", claim.claim),
                              kind=claim.kind, margin=claim.margin,
                              cost_measure=claim.cost_measure)
        cell["published"] = report.published_record(claim)
        if spec is not None:
            cell["notes"] = spec.notes_for(cell["task"])
        if not cell["effects"] or claim is None:
            continue
        first = cell["effects"][0]
        v = verdicts.judge(first, claim,
                           expected_sign=spec.expected_sign if spec is not None
                           else first.get("expected_sign", 1),
                           higher_is_better=first["higher_is_better"],
                           chosen_on_test=spec.chosen_on_test if spec is not None else "")
        first.update(verdict=v.outcome, claim_kind=v.kind, verdict_test=v.test)
    return results


def merge(results: dict[str, Any], later: dict[str, Any]) -> dict[str, Any]:
    """``results`` with every (task, model) block that ``later`` ran replaced by
    ``later``'s cells (a block is rerun whole, on the same items); the command line
    records the merge."""
    blocks = {(c["task"], c["model"]) for c in later["cells"]}
    kept = [c for c in results["cells"] if (c["task"], c["model"]) not in blocks]
    names = ", ".join(f"{t} ({m})" for t, m in sorted(blocks))
    return {**results, "cells": kept + later["cells"],
            "command": f"{results['command']}; {names} replaced from `{later['command']}` "
                       f"run {later['created']}"}


def add_rows(results: dict[str, Any], later: dict[str, Any]) -> dict[str, Any]:
    """``results`` plus ``later``'s cells of rows it does not have yet (new methods
    measured on the same task and model); its other cells are left out, so every
    saved row keeps the numbers of the run that measured it. Each added cell carries
    its effect against the baselines of its own run (same items, same seeds)."""
    have = {c["key"] for c in results["cells"]}
    added = [c for c in later["cells"] if c["key"] not in have]
    names = ", ".join(sorted(c["key"] for c in added)) or "nothing"
    return {**results, "cells": results["cells"] + added,
            "command": f"{results['command']}; added {names} from `{later['command']}` "
                       f"run {later['created']}"}


def verdict_counts(results: dict[str, Any]) -> dict[str, dict[str, int]]:
    """claim kind -> outcome -> number of rows (first comparisons of published rows)."""
    counts: dict[str, dict[str, int]] = {}
    for c in results["cells"]:
        if c["published"] and c["effects"]:
            e = c["effects"][0]
            kind = e.get("claim_kind", c["published"].get("kind", "effect"))
            by_kind = counts.setdefault(kind, {})
            by_kind[e["verdict"]] = by_kind.get(e["verdict"], 0) + 1
    return counts


def _verdict_text(effect: dict[str, Any]) -> str:
    outcome = verdicts.OUTCOME_TEXT.get(effect["verdict"], effect["verdict"])
    return f"{outcome} ({effect['verdict_test']})" if effect.get("verdict_test") else outcome


def _by_construction_reason(results: dict, cell: dict, effect: dict) -> str:
    base = _cell(results, f"{cell['task']}/{cell['model']}/{effect['baseline']}")
    mine = cell["metrics"].get("diversity", {}).get("mean")
    theirs = (base or {}).get("metrics", {}).get("diversity", {}).get("mean")
    if mine is None or theirs is None:
        return ""
    return (f"diversity, a measure the papers report, is {mine:.3f} for the row against "
            f"{theirs:.3f} for `{effect['baseline']}` (cell means, unpaired: per-item texts "
            "were not kept)")


def render(results: dict[str, Any], plot_name: str | None) -> str:
    m = results["machine"]
    order = {family: i for i, (family, _) in enumerate(EXPECTED)}
    rows = sorted((c for c in results["cells"] if c["published"] and c["effects"]),
                  key=lambda c: (order.get(c["family"], len(order)), c["task"], c["method"]))
    lines = [
        "# Evidence: measured effect and cost of each landed method family", "",
        "_Generated by `sglang-ilsi bench --evidence` (re-render: `python -m "
        "sglang_ilsi_lab.bench.evidence --from RESULTS.json`); do not edit by hand._", "",
        f"Run {results['created']} on {m['platform']} ({m['cpus']} CPUs, shared with other "
        f"work), sglang {m['sglang']}, torch {m['torch']}. Command: `{results['command']}`.",
        "Items are seeded held-out sets (`lab/sglang_ilsi_lab/data/`); effects are paired differences "
        "to the comparison row on the same items, with 95% percentile bootstrap intervals "
        f"(`scipy.stats.bootstrap`, {results['bootstrap_resamples']} resamples). Costs are "
        "ratios to the comparison row: forward tokens (all samples generated, plus the "
        "method's extra and auxiliary forwards from the `ilsi` report) and wall time per item "
        "(requests sent 8 at a time, so batching is included; the 2 cores were shared with "
        "other engineers' jobs, so time ratios are rough).", "",
        "## How a verdict is reached", "",
        "Each row's spec declares what kind of claim its paper made, and the verdict applies "
        "that kind's test (the verdict column names the test and the numbers it used):", "",
        "- **effect** (the method changes quality): *reproduced* when the effect's CI lies "
        "on the published side of 0, *inconclusive* when it contains 0, *opposite* when it "
        "lies on the other side.",
        "- **speed** (same outputs, less time: the speculative rows): the quality check "
        "first (the effect CI within the claim's margin; margin 0, identical outputs, for "
        "lossless methods), then the wall-time ratio to the comparison row: *reproduced* "
        "when its bootstrap CI lies below 1. Runs that recorded only each cell's wall time "
        "are judged on the recorded ratio, labelled *a point estimate* (no CI): below 1 is "
        "*reproduced*, otherwise *not shown*. A CI containing 0 on the quality metric is "
        "never by itself a reproduced speed claim.",
        "- **equivalence** (the same quality at a lower cost, e.g. ESC): *reproduced* when the "
        "effect CI lies inside ±margin, a margin stated in the spec before the run, and the "
        "claim's cost ratio is below 1; *not shown* otherwise.",
        "- **by construction** (the metric must move this way whatever the method's merit, "
        "e.g. perplexity under the same model after truncating its tail): shown, labelled "
        "*by construction (not evidence)*, never counted as reproduced.",
        "- *pending rerun*: a setting of the row (e.g. DoLa's layer bucket) was chosen by "
        "looking at its test items; the row is not judged until it is rerun with the choice "
        "made on a disjoint validation split.", "",
        "| claim kind | " + " | ".join(OUTCOME_COLUMNS) + " | rows |",
        "|---|" + "---|" * (len(OUTCOME_COLUMNS) + 1),
    ]
    counts = verdict_counts(results)
    for kind in specs.CLAIM_KINDS:
        by_kind = counts.get(kind, {})
        lines.append(f"| {KIND_TEXT[kind]} | "
                     + " | ".join(str(by_kind.get(o, 0)) for o in OUTCOME_COLUMNS)
                     + f" | {sum(by_kind.values())} |")
    lines += [
        "", "## Summary", "",
        "| family | row | task (model) | vs | claim | metric | row value | effect [95% CI] | "
        "fwd tokens × | time × | published | verdict (test applied) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in rows:
        e = c["effects"][0]
        pub = c["published"]
        kind = e.get("claim_kind", pub.get("kind", "effect"))
        lines.append(
            f"| {c['family']} | `{c['method']}` | {c['task']} ({c['model']}) | "
            f"`{e['baseline']}` | {KIND_TEXT.get(kind, kind)} | "
            f"{e['metric']}{'' if e['higher_is_better'] else ' (↓)'} | "
            f"{fmt(c['metrics'].get(e['metric'], {}).get('mean'))} | {fmt_ci(e, 'diff')} | "
            f"{fmt(e['cost_ratio']['forward_tokens'], 2)} | "
            f"{fmt(e['cost_ratio']['seconds_per_item'], 2)} | "
            f"{pub['claim']} ({pub['source']}) | {_verdict_text(e)} |")
    misses = [(c, e) for c in rows for e in c["effects"][:1] if e["verdict"] != "reproduced"]
    lines += ["", "## Where the published claim is not shown, and why", ""]
    if not misses:
        lines.append("Every row shows its published claim.")
    for c, e in misses:
        if e["verdict"] == verdicts.BY_CONSTRUCTION:
            why = "; ".join(r for r in (_by_construction_reason(results, c, e), c["notes"]) if r)
        elif e["verdict"] == verdicts.PENDING_RERUN:
            why = (f"rerun the task's rows on the new split with `sglang-ilsi bench --tasks "
                   f"{c['task']} --out bench-runs/{c['task']}-rerun --no-progress`, then "
                   f"`python -m sglang_ilsi_lab.bench.evidence --from docs/evidence.json "
                   f"--merge bench-runs/{c['task']}-rerun/results.json`")
        else:
            why = diagnose(results, c, e)
        lines.append(f"- `{c['method']}` on {c['task']} ({c['model']}), {e['metric']} vs "
                     f"`{e['baseline']}`: {fmt_ci(e, 'diff')} — {_verdict_text(e)}. {why}.")
    noted = [c for c in rows if c["notes"] and c["effects"][0]["verdict"] == "reproduced"]
    if noted:
        lines += ["", "## Caveats on rows that reproduce", ""]
        for c in noted:
            lines.append(f"- `{c['method']}` on {c['task']} ({c['model']}): {c['notes']}.")
    second = [(c, e) for c in rows for e in c["effects"][1:]]
    if second:
        lines += ["", "## Other comparisons", "",
                  "| row | task (model) | vs | metric | effect [95% CI] | fwd tokens × | time × |",
                  "|---|---|---|---|---|---|---|"]
        for c, e in second:
            lines.append(f"| `{c['method']}` | {c['task']} ({c['model']}) | `{e['baseline']}` | "
                         f"{e['metric']} | {fmt_ci(e, 'diff')} | "
                         f"{fmt(e['cost_ratio']['forward_tokens'], 2)} | "
                         f"{fmt(e['cost_ratio']['seconds_per_item'], 2)} |")
    families = {c["family"] for c in results["cells"]}
    lines += ["", "## Families", ""]
    for family, what in EXPECTED:
        state = "measured above" if family in families else "**not landed yet**: no bench rows"
        lines.append(f"- {what}: {state}")
    lines += ["", "## Every cell", "",
              "| task | model | row | metric | value [95% CI] | fwd tokens/item | samples | "
              "s/item | other metrics |", "|---|---|---|---|---|---|---|---|---|"]
    for c in results["cells"]:
        others = ", ".join(f"{k} {fmt(v['mean'])}" for k, v in c["metrics"].items()
                           if k != c["metric"])
        lines.append(f"| {c['task']} | {c['model']} | `{c['method']}` | {c['metric']} | "
                     f"{fmt_ci(c['metrics'].get(c['metric'], {}))} | "
                     f"{fmt(c['cost']['forward_tokens'], 1)} | {fmt(c['cost']['samples'], 1)} | "
                     f"{fmt(c['cost']['seconds_per_item'], 3)} | {others} |")
    if plot_name:
        lines += ["", "## Effect against cost", "", f"![effect against cost]({plot_name})"]
    return "\n".join(lines) + "\n"


def write(results: dict[str, Any], doc: Path) -> Path:
    """Write ``doc``, plus the plot and results JSON beside it (``doc`` stem + .png/.json);
    verdicts, claims and notes are (re)judged from the current specs first."""
    results = judge_results(results)
    png = report.plot(results, doc.with_suffix(".png"))
    plot_name = png.name if png is not None else None
    if plot_name is None and doc.with_suffix(".png").is_file():
        plot_name = doc.with_suffix(".png").name  # no matplotlib: keep the last plot
    _atomic_write(doc.with_suffix(".json"), json.dumps(results, indent=2).encode())
    _atomic_write(doc, render(results, plot_name).encode())
    return doc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--from", dest="source", default=None,
                    help="render from this results.json")
    ap.add_argument("--merge", action="append", default=[],
                    help="with --from: a later run's results.json whose task and model blocks "
                         "replace the saved ones (repeatable)")
    ap.add_argument("--add", action="append", default=[],
                    help="with --from: a later run's results.json whose rows not yet saved "
                         "are added, the saved ones kept (repeatable)")
    ap.add_argument("--doc", default="docs/evidence.md")
    ns, rest = ap.parse_known_args(argv)
    if ns.source is None:
        ap.error("--from RESULTS.json is required here (this only renders); run the grid "
                 "and render with: sglang-ilsi bench --evidence")
    if rest:
        ap.error(f"unrecognized arguments: {' '.join(rest)}")
    results = json.loads(Path(ns.source).read_text())
    for path in ns.merge:
        results = merge(results, json.loads(Path(path).read_text()))
    for path in ns.add:
        results = add_rows(results, json.loads(Path(path).read_text()))
    print(write(results, Path(ns.doc)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
