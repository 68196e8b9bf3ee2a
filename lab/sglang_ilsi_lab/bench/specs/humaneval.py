"""HumanEval: pass@1 of greedy and of one sample vs best-of-N with execution feedback.

SmolLM2-Instruct does not continue raw code (it closes the block and explains,
even when its reply is pre-filled with the code), so on a chat model the
prompt asks to complete the function and the reply's fenced function is the
candidate (:func:`sglang_ilsi_lab.data.humaneval.solution`); generation stops at
the closing fence. A model without a chat template continues the raw prompt
(up to the token limit).

Every candidate runs in the sandbox of :mod:`sglang_ilsi.tools.sandbox`
(separate process, no network, unprivileged user where possible, CPU, memory,
output and wall-clock limits). ``exec_feedback@N`` samples N completions in
one request, executes each against the problem's visible docstring examples,
and answers with the first that passes them all (else the one passing most;
with no visible examples, the first sample). Correctness is always the
hidden ``check`` tests.
"""

from __future__ import annotations

from typing import Any

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
from sglang_ilsi_lab.data import humaneval

LIMITS = {"cpu_seconds": 5, "wall_seconds": 10.0, "memory_bytes": 512 * 1024 * 1024}
N = 4
T = 0.7


def _run(code: str) -> Any:
    from sglang_ilsi.tools.sandbox import Limits, run_python

    return run_python(code, Limits(**LIMITS))


def _score(item: Item, gen: Generation) -> dict[str, float]:
    result = _run(humaneval.program(item, gen.text, visible=False))
    return {"pass": float(result.ok)}


INSTRUCTION = "Complete the following Python function.\n```python\n{prompt}```"


register_task(TaskSpec(
    name="humaneval",
    description="HumanEval code completion (seeded subset of the 164 problems); hidden tests "
                "run in the sandbox",
    models=("smollm2-135m-instruct",),
    quick_models=(),
    items=lambda n, seed: humaneval.humaneval(n, seed=seed),
    score=_score,
    primary="pass",
    higher_is_better={"pass": True},
    max_new_tokens=192,
    prompt=lambda item, chat: INSTRUCTION.format(prompt=item["prompt"]) if chat
    else item["prompt"],
    items_default=40,
    items_quick=2,
    sampling={"stop": ["```\n"]},
    version=3,
))


def exec_feedback(client: Any, task: TaskSpec, item: Item, prompt_ids: list[int],
                  row: MethodSpec) -> Generation:
    """Sample N, run each on the visible examples in the sandbox, pick one."""
    n = int(row.sampling.get("n_candidates", N))
    cands = client.generate_n(prompt_ids, n, max_new_tokens=task.max_new_tokens,
                              temperature=row.temperature, sampling=dict(task.sampling))
    passed = []
    if item["examples"]:
        for c in cands:
            res = _run(humaneval.program(item, c.text, visible=True))
            passed.append(humaneval.examples_passed(res.stdout) if res.ok else -1)
        best = max(range(len(cands)), key=lambda i: (passed[i], -i))
    else:
        best = 0
    return chosen_sample(cands, best, {"method": "exec_feedback",
                                       "examples": len(item["examples"]),
                                       "examples_passed": passed,
                                       "cost": {"sandbox_runs": len(passed)}})


register_method(MethodSpec(
    name=f"exec_feedback@{N}", family="execution feedback", tasks=("humaneval",),
    temperature=T, runner=exec_feedback, baselines=("sample", "greedy"),
    published=Published(
        "Li et al. 2022, AlphaCode (filtering by example tests); Chen et al. 2023, CodeT (ICLR)",
        "executing sampled programs on tests and keeping those that pass raises pass@1 "
        "(CodeT: HumanEval 47.0 -> 65.8 with code-davinci-002)"),
    notes=f"N={N} samples at T={T}; only the problems with docstring examples (70 of 164) "
          "give feedback, the others fall back to the first sample",
))
