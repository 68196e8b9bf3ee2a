"""PG-TD on small stdin programs: visible tests guide the search, hidden ones judge.

The task (:mod:`sglang_ilsi_lab.data.stdin_programs`) asks SmolLM2 for programs
that read ``n`` and print something of it; the bench evaluates its ``test``
split, whose kinds of program the ``validation`` split (where the search budget
was chosen) does not share. ``pg_td`` searches with the item's
visible test (n = 3) as its reward, run in the server's sandbox; every row is
scored on the hidden tests (n = 5 and 8), run in the same sandbox
(:mod:`sglang_ilsi.tools.sandbox`), so a search that only fits its visible test
gains nothing. The program in a reply is its first fenced block, else the text
(:func:`sglang_ilsi.methods.search.pg_td.program_of`, what the search runs).
"""

from __future__ import annotations

from typing import Any

from sglang_ilsi.methods.search.pg_td import program_of, same_output
from sglang_ilsi_lab.bench.spec import (
    Generation,
    Item,
    MethodSpec,
    Published,
    TaskSpec,
    chosen_sample,
    register_method,
    register_task,
)
from sglang_ilsi_lab.data.stdin_programs import stdin_programs

SMOLLM2 = "smollm2-135m-instruct"
ITERATIONS, MORE_ITERATIONS, TOP_K = 8, 32, 3
# PG-TD's baselines: as many programs as 32 iterations run (7.3 per item on the test split)
FILTER_SAMPLES, FILTER_TEMPERATURE, BEAMS = 8, 0.7, 4


def passes(code: str, tests: list[tuple[str, str]]) -> bool:
    """Whether ``code`` prints each test's expected output from its input, in the sandbox."""
    from sglang_ilsi.tools.sandbox import Limits, run_python

    for stdin, expected in tests:
        result = run_python(code, Limits(cpu_seconds=2, wall_seconds=5.0), stdin=stdin)
        if not (result.ok and same_output(result.stdout, expected)):
            return False
    return True


def _score(item: Item, gen: Generation) -> dict[str, float]:
    code = program_of(gen.text)
    return {"pass": float(passes(code, item["hidden"])),
            "visible": float(passes(code, item["visible"]))}


register_task(TaskSpec(
    name="stdin_programs",
    description="small Python programs reading n from standard input; one visible test "
                "(n = 3), hidden tests (n = 5, 8) run in the sandbox",
    models=(SMOLLM2,),
    quick_models=(),
    items=lambda n, seed: stdin_programs(n, seed=seed),  # the test split
    score=_score,
    primary="pass",
    higher_is_better={"pass": True, "visible": True},
    max_new_tokens=96,
    items_default=40,
    items_quick=2,
    sampling={"stop": ["```\n"]},
    version=2,  # the test split's kinds (version 1 evaluated the validation split's)
))


def pg_td_runner(client: Any, task: TaskSpec, item: Item, prompt_ids: list[int],
                 row: MethodSpec) -> Generation:
    """One /generate call whose PG-TD search is rewarded by the item's visible tests."""
    ilsi = {**(row.ilsi_for(task.name) or {}),
            "test_inputs": [i for i, _ in item["visible"]],
            "test_outputs": [o for _, o in item["visible"]]}
    return client.generate(prompt_ids, max_new_tokens=task.max_new_tokens,
                           temperature=row.temperature, ilsi=ilsi,
                           sampling={**task.sampling, **row.sampling})


def sample_and_filter(client: Any, task: TaskSpec, item: Item, prompt_ids: list[int],
                      row: MethodSpec) -> Generation:
    """Sampling + filtering, PG-TD's baseline (after Chen et al. 2021, Li et al. 2022):
    ``FILTER_SAMPLES`` programs sampled in one request, each run on the visible test
    in the sandbox; the first that passes answers, else the first sample."""
    samples = client.generate_n(prompt_ids, FILTER_SAMPLES, max_new_tokens=task.max_new_tokens,
                                temperature=row.temperature,
                                sampling={**task.sampling, **row.sampling})
    passing = [i for i, g in enumerate(samples)
               if passes(program_of(g.text), item["visible"])]
    return chosen_sample(samples, passing[0] if passing else 0,
                         {"method": "sample_and_filter", "passing": passing,
                          "info": {"programs_run": float(len(samples))},
                          "cost": {"sandbox_runs": len(samples)}})


def search_cost(item: Item, gen: Generation) -> dict[str, float]:
    info = gen.report.get("info") or {}
    return {"programs_run": float(info.get("programs_run", 0)),
            "cached_rollouts": float(info.get("cached_rollouts", 0))}


# chosen on the validation split (sglang-ilsi bench --tasks stdin_programs --methods
# pg_td,pg_td@32 with split "validation"): greedy 0.325, 8 iterations 0.375 (1.8 programs
# run per item: most iterations walk down the cached greedy path), 32 iterations 0.650
PG_TD = Published(
    "Zhang et al. 2023, Planning with Large Language Models for Code Generation (PG-TD, ICLR)",
    "a tree search over tokens rewarded by the problem's public tests yields programs that "
    "pass more of its hidden tests than beam search or sampling (APPS, CodeContests; GPT-2, "
    "GPT-Neo)")
register_method(MethodSpec(
    name=f"sample_filter@{FILTER_SAMPLES}", family="tree search", tasks=("stdin_programs",),
    runner=sample_and_filter, temperature=FILTER_TEMPERATURE, baselines=("greedy",),
    metrics_hook=search_cost, models=(SMOLLM2,), evidence=False,
    notes=f"PG-TD's sampling + filtering baseline: {FILTER_SAMPLES} programs at "
          f"T = {FILTER_TEMPERATURE} (the HumanEval rows' temperature), the first that passes "
          "the visible test answers",
))
register_method(MethodSpec(
    name=f"beam_search@{BEAMS}", family="tree search", tasks=("stdin_programs",),
    ilsi={"method": "beam_search", "beams": BEAMS}, baselines=("greedy",), models=(SMOLLM2,),
    evidence=False,
    notes=f"PG-TD's beam-search baseline: {BEAMS} beams, length penalty 1, the best beam "
          "answers (no test is run)",
))
for iterations in (ITERATIONS, MORE_ITERATIONS):
    register_method(MethodSpec(
        name="pg_td" if iterations == ITERATIONS else f"pg_td@{iterations}",
        family="tree search", tasks=("stdin_programs",),
        ilsi={"method": "pg_td", "n": iterations, "k": TOP_K},
        runner=pg_td_runner, server_args=["--ilsi-tools", "python"],
        baselines=("greedy", f"sample_filter@{FILTER_SAMPLES}", f"beam_search@{BEAMS}"),
        metrics_hook=search_cost, models=(SMOLLM2,), published=PG_TD,
        notes=f"{iterations} iterations, top-{TOP_K} expansion, P-UCB weight 4; the reward is "
              "the visible test (n = 3) only, the metric the hidden tests (n = 5, 8); "
              + ("the default budget" if iterations == ITERATIONS else
                 f"{iterations} iterations chosen on the validation split's kinds of program "
                 f"({ITERATIONS}: +0.050, {iterations}: +0.325 over greedy there)"),
    ))
