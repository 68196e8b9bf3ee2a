"""``sglang-ilsi bench``: arguments and entry point (wired into :mod:`sglang_ilsi.cli`)."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

DESCRIPTION = """\
Measure methods' effect and cost: a grid of method x model x task against a
server it starts (one per model and launch flags) or one given by --url.
Resumable: finished items go to OUT/run.jsonl at once; the same command again
skips finished cells. Writes OUT/results.json, results.md and results.png.
--quick is the small CPU grid CI runs; --evidence runs the default grid and
regenerates docs/evidence.md. `--list` prints the grid without running it.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="the small grid (a few CPU minutes)")
    p.add_argument("--evidence", action="store_true",
                   help="run the default grid and write the evidence document")
    p.add_argument("--tasks", action="append", help="comma-separated task names (default: all)")
    p.add_argument("--models", action="append",
                   help="comma-separated catalog model names (default: each task's own)")
    p.add_argument("--methods", action="append",
                   help="comma-separated rows (default: the grid's; baselines are added)")
    p.add_argument("--items", type=int, default=None, help="items per cell (default: per task)")
    p.add_argument("--seed", type=int, default=None, help="item seed (default: per task)")
    p.add_argument("--url", default=None, help="use this running server instead of starting one")
    p.add_argument("--out", default=None,
                   help="output folder (default: bench-runs/quick, bench-runs/evidence or "
                        "bench-runs/default)")
    p.add_argument("--fresh", action="store_true",
                   help="start a new run file (the old one is kept as run.jsonl.old)")
    p.add_argument("--concurrency", type=int, default=8, help="requests in flight per cell")
    p.add_argument("--spec", action="append", default=[],
                   help="a Python file registering more tasks/rows (repeatable)")
    p.add_argument("--doc", default="docs/evidence.md",
                   help="with --evidence: where to write the document (default: %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--list", action="store_true", help="print the planned cells and exit")


def run(ns: argparse.Namespace, argv: list[str] | None = None) -> int:
    from sglang_ilsi_lab.bench import report, runner
    from sglang_ilsi_lab.bench import spec as specs
    from sglang_ilsi_lab.bench.client import ServerUnreachableError
    from sglang_ilsi_lab.models import catalog
    from sglang_ilsi_lab.server_process import exit_on_sigterm

    exit_on_sigterm()  # a killed run stops the servers it started

    def fail(message: str, code: int = 2) -> int:
        print(f"sglang-ilsi bench: error: {message}", file=sys.stderr)
        return code

    if ns.quick and ns.evidence:
        return fail("--quick and --evidence exclude each other")
    if ns.items is not None and ns.items < 1:
        return fail(f"--items must be >= 1, got {ns.items}")
    try:
        specs.load(ns.spec)
        cells = runner.plan(tasks=ns.tasks, models=ns.models, methods=ns.methods,
                            quick=ns.quick, items=ns.items, seed=ns.seed)
    except (runner.BenchError, specs.SpecError) as exc:
        return fail(str(exc))
    if ns.list:
        for cell in cells:
            print(f"{cell.key}  items={cell.items}  {cell.config()['ilsi']}")
        return 0
    name = "quick" if ns.quick else "evidence" if ns.evidence else "default"
    out = Path(ns.out or Path("bench-runs") / name)
    try:
        if ns.url is not None:
            from sglang_ilsi_lab.bench.client import check_reachable

            check_reachable(ns.url)  # before the output folder is touched
        if ns.fresh and (out / runner.RUN_FILE).is_file():
            (out / runner.RUN_FILE).replace(out / (runner.RUN_FILE + ".old"))
        run_file = runner.run_grid(cells, out, url=ns.url, concurrency=ns.concurrency,
                                   progress=not ns.no_progress)
    except ServerUnreachableError as exc:
        return fail(str(exc))
    except catalog.ModelError as exc:
        return fail(str(exc), 1)
    except (runner.BenchError, RuntimeError, TimeoutError) as exc:
        return fail(str(exc), 1)
    command = "sglang-ilsi bench " + shlex.join(argv if argv is not None else sys.argv[2:])
    results = report.summarize(cells, run_file, quick=ns.quick, command=command.strip())
    files = report.write(results, out)
    print(report.markdown(results))
    for kind, path in files.items():
        print(f"[bench] {kind}: {path or 'not written (matplotlib is not installed)'}")
    if ns.evidence:
        from sglang_ilsi_lab.bench import evidence

        doc = evidence.write(results, Path(ns.doc))
        print(f"[bench] evidence: {doc}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="sglang-ilsi bench", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    args = list(sys.argv[1:] if argv is None else argv)
    return run(p.parse_args(args), args)


if __name__ == "__main__":
    sys.exit(main())
