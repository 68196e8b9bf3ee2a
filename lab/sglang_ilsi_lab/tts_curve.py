"""The test-time-scaling curve from a bench run of the search grid.

    sglang-ilsi bench --models lab-target-early --items 200 --out bench-runs/tts \\
        --methods sample,greedy,$(python -m sglang_ilsi_lab.tts_curve --rows)
    python -m sglang_ilsi_lab.tts_curve bench-runs/tts/results.json \\
        --png docs/test-time-scaling.png --json docs/test-time-scaling.json

Reads the run's cells (``bench/specs/search.py``: majority vote, best-of-N with
the outcome reward model, reward-weighted self-consistency with the process
reward model, PRM beam search, DVTS and MCTS at N = 4, 16, 64; N = 1 is the single
``sample`` row), and writes:

- a PNG: accuracy (with its bootstrap CI) against policy tokens generated per
  problem, one line per method (dotted: judged by ``lab-verifier``), greedy as a
  dashed line;
- a JSON summary: the points, and the two published signs checked on the
  paired effects the run computed — verifier-guided methods against majority
  voting at the same N (Snell et al. 2024; Cobbe et al. 2021), and PRM beam
  search against best-of-N at small N (Snell et al. 2024; Lightman et al. 2023).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

METHODS = {"self_consistency": "majority vote", "best_of_n_orm": "best-of-N + ORM",
           "weighted_sc_prm": "weighted SC + PRM", "prm_beam_search": "PRM beam search",
           "dvts": "DVTS", "mcts": "MCTS + PRM",
           # the same searches judged by lab-verifier (lab-target's likelihood)
           "best_of_n_verifier": "best-of-N + verifier",
           "weighted_sc_verifier": "weighted SC + verifier",
           "prm_beam_search_verifier": "beam search + verifier",
           "dvts_verifier": "DVTS + verifier", "mcts_verifier": "MCTS + verifier"}
BUDGETS = (4, 16, 64)
VERIFIED = tuple(m for m in METHODS if m != "self_consistency")
# (beam search row, its best-of-N comparison) per reward model
BEAM_VS_BEST_OF_N = (("prm_beam_search", "best_of_n_orm"),
                     ("prm_beam_search_verifier", "best_of_n_verifier"))


def rows() -> list[str]:
    return [f"{m}@{n}" for m in METHODS for n in BUDGETS]


def _effect(cell: dict[str, Any], baseline: str) -> dict[str, Any] | None:
    for e in cell.get("effects", []):
        if e["baseline"] == baseline:
            return {"diff": round(e["diff"], 4), "ci": [round(e["ci_low"], 4),
                                                        round(e["ci_high"], 4)],
                    "tokens_ratio": round(e["cost_ratio"]["forward_tokens"], 3),
                    "n": e["n"],
                    "sign": ("+" if e["ci_low"] > 0 else "-" if e["ci_high"] < 0 else "0")}
    return None


def summarise(results: dict[str, Any]) -> dict[str, Any]:
    cells = {c["method"]: c for c in results["cells"] if c["task"] == "arithmetic"}

    def point(cell: dict[str, Any]) -> dict[str, Any]:
        m = cell["metrics"]["accuracy"]
        return {"accuracy": m["mean"], "ci": [m["ci_low"], m["ci_high"]],
                "tokens_per_problem": round(cell["cost"]["forward_tokens"], 1),
                "items": m["n"], "seconds_per_item": round(cell["cost"]["seconds_per_item"], 3)}

    curve: dict[str, list[dict[str, Any]]] = {}
    for method in METHODS:
        line = []
        if "sample" in cells:
            line.append({"n": 1, **point(cells["sample"])})
        line += [{"n": n, **point(cells[f"{method}@{n}"])} for n in BUDGETS
                 if f"{method}@{n}" in cells]
        curve[method] = line
    against_majority = {f"{m}@{n}": _effect(cells[f"{m}@{n}"], f"self_consistency@{n}")
                        for m in VERIFIED for n in BUDGETS if f"{m}@{n}" in cells}
    beam_vs_bon = {f"{beam}@{n}": _effect(cells[f"{beam}@{n}"], f"{best}@{n}")
                   for beam, best in BEAM_VS_BEST_OF_N for n in BUDGETS
                   if f"{beam}@{n}" in cells}
    return {
        "task": "arithmetic (lab, 1-3 operations)", "model": "lab-target-early",
        "greedy": point(cells["greedy"]) if "greedy" in cells else None,
        "curve": curve,
        "claims": {
            "verifier_guided_vs_majority_same_n": {
                "published": "verifier-guided search beats majority voting at equal compute "
                             "(Snell et al. 2024; Cobbe et al. 2021)",
                "effects": against_majority,
                "reproduced_at": sorted(k for k, e in against_majority.items()
                                        if e and e["sign"] == "+"),
                "reversed_at": sorted(k for k, e in against_majority.items()
                                      if e and e["sign"] == "-")},
            "prm_beam_search_vs_best_of_n": {
                "published": "PRM beam search beats best-of-N at small budgets (Snell et al. "
                             "2024; Lightman et al. 2023)",
                "effects": beam_vs_bon},
        },
        "run": {k: results.get(k) for k in ("created", "command", "machine", "confidence",
                                             "bootstrap_resamples")},
    }


def plot(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9.5, 4.8))
    # one colour per search, solid with the trained reward models, dotted with the verifier
    searches = [m for m in METHODS if not m.endswith("_verifier")]
    for method, line in summary["curve"].items():
        if not line:
            continue
        xs = [p["tokens_per_problem"] for p in line]
        ys = [p["accuracy"] for p in line]
        err = [[p["accuracy"] - p["ci"][0] for p in line], [p["ci"][1] - p["accuracy"]
                                                              for p in line]]
        verified = method.endswith("_verifier")
        search = method.removesuffix("_verifier")
        colour = next(i for i, m in enumerate(searches) if m.split("_")[0] == search.split("_")[0])
        ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=METHODS[method],
                    ls=":" if verified else "-", color=f"C{colour}")
        for p in line:
            ax.annotate(f"N={p['n']}", (p["tokens_per_problem"], p["accuracy"]), fontsize=6,
                        xytext=(3, -9), textcoords="offset points")
    if summary.get("greedy"):
        ax.axhline(summary["greedy"]["accuracy"], ls="--", color="grey", lw=1, label="greedy")
    ax.set_xscale("log")
    ax.set_xlabel("policy tokens generated per problem (log)")
    ax.set_ylabel("accuracy (95% bootstrap CI)")
    ax.set_title("Test-time scaling on the lab arithmetic task (lab-target-early)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", nargs="?", help="a bench run's results.json")
    p.add_argument("--png", default="docs/test-time-scaling.png")
    p.add_argument("--json", default="docs/test-time-scaling.json")
    p.add_argument("--rows", action="store_true", help="print the grid's rows and exit")
    args = p.parse_args(argv)
    if args.rows:
        print(",".join(rows()))
        return 0
    if not args.results:
        p.error("give a results.json")
    summary = summarise(json.loads(Path(args.results).read_text()))
    Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
    plot(summary, Path(args.png))
    json.dump(summary["claims"], sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
