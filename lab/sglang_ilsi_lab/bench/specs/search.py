"""Reward-model and search rows on the lab arithmetic task: the test-time-scaling grid.

Every row samples at the same temperature from ``lab-target-early`` (greedy
accuracy ~0.65) and spends N samples or N nodes per step, N = 4, 16, 64:
majority vote (``self_consistency@N``), best-of-N with the outcome reward model,
reward-weighted self-consistency with the process reward model, PRM beam search
and DVTS (M = 4), MCTS with the process reward model as value (N iterations of
4 children). The ``*_verifier@N`` rows do the same with ``lab-verifier`` (lab-target
read through its own likelihood, no training) in place of lab-orm and lab-prm: a
verifier that checks the arithmetic, where the trained pair rates difficulty.
``sglang_ilsi_lab.tts_curve`` turns a run of them into the
accuracy-against-generated-tokens curve (docs/test-time-scaling.png). The N = 16
rows are part of the evidence grid; the others run with ``--methods``.
"""

from __future__ import annotations

from sglang_ilsi_lab.bench.spec import MethodSpec, Published, methods, register_method
from sglang_ilsi_lab.bench.specs.selection import T, candidate_metrics
from sglang_ilsi_lab.models import lab

BUDGETS = (4, 16, 64)
EVIDENCE_BUDGET = 16
BEAM_WIDTH = 4
MAX_STEPS = 8


def reward_flags(model: str) -> list[str]:
    return ["--ilsi-reward-model", f"prm={lab.folder('lab-prm')}",
            "--ilsi-reward-model", f"orm={lab.folder('lab-orm')}"]


def verifier_flags(model: str) -> list[str]:
    return ["--ilsi-reward-model", f"verifier={lab.folder('lab-verifier')}"]


SELECTIONS = ("best_of_n", "weighted_self_consistency")  # rows that report their candidates
VERIFIER_NOTE = ("the reward model is lab-verifier: lab-target (greedy accuracy 0.975) read "
                 "through its own likelihood, a step's score the lowest p(token | prefix) of "
                 "any solution token so far; a stronger model judging, not a trained PRM")

SNELL = "Snell et al. 2024, Scaling LLM Test-Time Compute Optimally (arXiv:2408.03314)"
for n in BUDGETS:
    if n != EVIDENCE_BUDGET:  # self_consistency@16 is the selection family's row
        register_method(MethodSpec(
            name=f"self_consistency@{n}", family="selection", tasks=("arithmetic",),
            ilsi={"method": "self_consistency", "n": n, "extractor": "hash_marker"},
            temperature=T, metrics_hook=candidate_metrics, baselines=("sample",),
            models=("lab-target-early",), evidence=False,
            published=Published(
                "Wang et al. 2023, Self-Consistency Improves Chain of Thought Reasoning (ICLR)",
                "majority vote over sampled reasoning paths beats a single path"),
            notes="the majority-vote line of the test-time-scaling curve",
        ))
    majority = f"self_consistency@{n}"
    common = {"family": "reward", "tasks": ("arithmetic",), "temperature": T,
              "server_args": reward_flags, "models": ("lab-target-early",),
              "evidence": n == EVIDENCE_BUDGET}
    register_method(MethodSpec(
        name=f"best_of_n_orm@{n}",
        ilsi={"method": "best_of_n", "n": n, "reward": "model", "reward_model": "orm"},
        metrics_hook=candidate_metrics, baselines=(majority, "sample"), **common,
        published=Published(
            "Cobbe et al. 2021, Training Verifiers to Solve Math Word Problems",
            "a trained outcome verifier choosing among N samples beats majority voting at "
            "large N (GSM8K, 6B: verification > voting from N ≈ 10)"),
        notes="the outcome reward model is lab-orm, trained on target-early's own samples",
    ))
    register_method(MethodSpec(
        name=f"weighted_sc_prm@{n}",
        ilsi={"method": "weighted_self_consistency", "n": n, "reward_model": "prm",
              "aggregate": "min", "extractor": "hash_marker"},
        metrics_hook=candidate_metrics, baselines=(majority, "sample"), **common,
        published=Published(
            "Li et al. 2023 (DiVeRSe, ACL); Lightman et al. 2023, Let's Verify Step by Step",
            "voting weighted by a step-aware verifier beats plain majority voting "
            "(GSM8K, code-davinci-002: +2 to +6 points)"),
        notes="weights: lab-prm's lowest step score (min)",
    ))
    register_method(MethodSpec(
        name=f"prm_beam_search@{n}",
        ilsi={"method": "prm_beam_search", "n": n, "beam_width": BEAM_WIDTH,
              "max_steps": MAX_STEPS, "reward_model": "prm"},
        baselines=(f"best_of_n_orm@{n}", majority, "sample"), **common,
        published=Published(
            SNELL, "PRM-guided beam search beats best-of-N at small generation budgets and "
            "majority voting at equal compute (MATH, PaLM 2-S*); its edge shrinks at large N"),
        notes=f"N nodes a step, N/{BEAM_WIDTH} kept, {BEAM_WIDTH} children each; ranked by "
              "lab-prm's last step score",
    ))
    register_method(MethodSpec(
        name=f"dvts@{n}",
        ilsi={"method": "dvts", "n": n, "beam_width": BEAM_WIDTH, "max_steps": MAX_STEPS,
              "reward_model": "prm"},
        baselines=(majority, "sample"), **common,
        published=Published(
            "Beeching, Tunstall & Rush 2024, Scaling test-time compute with open models (HF)",
            "diverse verifier tree search beats beam search and majority voting at large "
            "budgets (MATH-500, Llama-3.2-1B, N ≥ 64)"),
        notes=f"N/{BEAM_WIDTH} subtrees, each keeps its best of {BEAM_WIDTH} children",
    ))
    register_method(MethodSpec(
        name=f"mcts@{n}",
        ilsi={"method": "mcts", "n": n, "width": BEAM_WIDTH, "max_steps": MAX_STEPS,
              "reward_model": "prm"},
        baselines=(majority, "sample"), **common,
        published=Published(
            "Hao et al. 2023, Reasoning with Language Model is Planning with World Model (RAP)",
            "MCTS over reasoning steps beats chain-of-thought sampling and self-consistency "
            "at comparable samples (GSM8K, LLaMA-33B: RAP-aggregate > SC@10)"),
        notes=f"N iterations, each expanding one node into {BEAM_WIDTH} steps valued by "
              "lab-prm (no rollouts)",
    ))

    # the same searches with lab-verifier: (row, its ilsi object, baselines, the
    # lab-prm/lab-orm row whose published claim it tests again)
    for name, ilsi, baselines, trained in (
            (f"best_of_n_verifier@{n}", {"method": "best_of_n", "n": n, "reward": "model"},
             (majority, f"best_of_n_orm@{n}", "sample"), f"best_of_n_orm@{n}"),
            (f"weighted_sc_verifier@{n}", {"method": "weighted_self_consistency", "n": n,
                                           "aggregate": "min", "extractor": "hash_marker"},
             (majority, f"weighted_sc_prm@{n}", "sample"), f"weighted_sc_prm@{n}"),
            (f"prm_beam_search_verifier@{n}", {"method": "prm_beam_search", "n": n,
                                               "beam_width": BEAM_WIDTH, "max_steps": MAX_STEPS},
             (f"best_of_n_verifier@{n}", majority, f"prm_beam_search@{n}"),
             f"prm_beam_search@{n}"),
            (f"dvts_verifier@{n}", {"method": "dvts", "n": n, "beam_width": BEAM_WIDTH,
                                    "max_steps": MAX_STEPS},
             (majority, f"dvts@{n}", "sample"), f"dvts@{n}"),
            (f"mcts_verifier@{n}", {"method": "mcts", "n": n, "width": BEAM_WIDTH,
                                    "max_steps": MAX_STEPS},
             (majority, f"mcts@{n}", "sample"), f"mcts@{n}")):
        register_method(MethodSpec(
            name=name, ilsi={**ilsi, "reward_model": "verifier"}, baselines=baselines,
            metrics_hook=candidate_metrics if ilsi["method"] in SELECTIONS else None,
            published=methods()[trained].published, notes=VERIFIER_NOTE,
            **{**common, "server_args": verifier_flags},
        ))
