#!/usr/bin/env python
"""Train the lab reward models (``lab-prm``, ``lab-orm``) on CPU and write their folders.

    nice -n 10 .venv/bin/python scripts/train_reward_models.py

Samples solutions from ``lab-target-early`` (temperature 1, several per problem) on
training arithmetic problems (seed 11, evaluation and selection prompts removed), labels
them under the scoring convention of :mod:`sglang_ilsi_lab.models.reward_models` (PRM:
each step still on the reference's track; ORM: final answer right), and trains a process
model (``LlamaForTokenClassification``) and an outcome model
(``LlamaForSequenceClassification``), both started from the policy's body, keeping the
epoch with the lowest loss on a tenth of the training problems held apart. The saved
folders are reloaded and evaluated on fresh samples of the evaluation problems
(``synthetic.arithmetic(400, seed=1)``): AUROC and accuracy, and best-of-N selection.
Writes ``OUT/prm``, ``OUT/orm`` (each with ``sglang_ilsi_reward.json``),
``OUT/reward-metrics.json`` and a section of ``OUT/README.md``. ``--evaluate-only``
re-runs the evaluation of the folders in ``OUT`` (no training) and updates the metrics.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import random
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from sglang_ilsi_lab.models import lab
from sglang_ilsi_lab.models import reward_models as rm

SECTION = "## Reward models: `lab-prm` and `lab-orm`"
CONTRAST_ITEMS = 40


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=0, help="model initialisation and training order")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--problems", type=int, default=3000)
    p.add_argument("--per-problem", type=int, default=4)
    p.add_argument("--eval-per-problem", type=int, default=4)
    p.add_argument("--problem-seed", type=int, default=rm.TRAIN_PROBLEM_SEED)
    p.add_argument("--sample-seed", type=int, default=11)
    p.add_argument("--eval-sample-seed", type=int, default=1011)
    p.add_argument("--val-share", type=float, default=0.1)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--out", type=Path, default=lab.LAB_DIR)
    p.add_argument("--readme-only", action="store_true",
                   help="only rewrite the README section from OUT/reward-metrics.json")
    p.add_argument("--evaluate-only", action="store_true",
                   help="only re-evaluate the folders in OUT and update their metrics")
    return p.parse_args(argv)


def readme_section(m: dict) -> str:
    d, h = m["data"], m["heldout"]
    prm, orm, bo = h["prm"], h["orm"], h["best_of_n"]
    base = h["policy_logprob_baseline"]
    c = h["reference_beats_wrong_first_step"]
    tr = m["training"]
    return f"""{SECTION}

Two reward models for the arithmetic task, judging solutions written by `{rm.POLICY}`,
trained on CPU by `scripts/train_reward_models.py`
(`lab/sglang_ilsi_lab/models/reward_models.py`): `prm/` (`lab-prm`,
`LlamaForTokenClassification`, one label: per-step correctness) and `orm/` (`lab-orm`,
`LlamaForSequenceClassification`, one label: final-answer correctness). Both start from
`{rm.POLICY}`'s body (float32, {m['folder_mb']['prm']:.2f} / {m['folder_mb']['orm']:.2f} MB)
and carry the policy's tokenizer and `sglang_ilsi_reward.json` (kind, step delimiter `"\\n"`,
policy, held-out metrics).

Scoring convention: the solution is split after each `"\\n"` (steps keep their delimiter);
input = prompt tokens + each step's tokens (each piece tokenised alone, no BOS/EOS); score =
sigmoid of `model.score(model.model(ids).last_hidden_state)[..., 0]`, read at each step's last
token (PRM) or at the last token (ORM). PRM label of step k: steps 1..k all equal the
reference's; ORM label: `synthetic.check` accepts the final answer.

Data: {d['train']['problems']} training problems (`synthetic.arithmetic({m['args']['problems']},
seed={m['args']['problem_seed']})`, evaluation and selection prompts removed), {m['args']['per_problem']}
solutions each sampled at temperature 1 (no top-k/top-p, at most 64 new tokens):
{d['train']['solutions']} solutions, {d['train']['correct_final']:.1%} with a right final answer,
{d['train']['steps']} steps of which {d['train']['steps_on_track']:.1%} on track;
{d['val']['problems']} of the problems ({d['val']['solutions']} solutions) held apart to pick the epoch.
Training: BCE with logits, AdamW (lr {m['args']['lr']}, warmup, cosine), batches of
{m['args']['batch_size']}, {m['args']['epochs']} epochs, seed {m['seed']}; best epoch PRM
{tr['prm']['best_epoch']}, ORM {tr['orm']['best_epoch']}; {tr['prm']['seconds'] / 60:.1f} + {tr['orm']['seconds'] / 60:.1f} min.
Whole script {m['wall_seconds'] / 60:.1f} min wall clock ({m['machine']}). Command:

```
{m['command']}
```

Held-out: {h['eval_set']['solutions']} solutions ({m['args']['eval_per_problem']} per problem, sampling seed
{m['args']['eval_sample_seed']}) on the evaluation problems `synthetic.arithmetic({rm.EVAL_PROBLEMS}, seed=1)`,
{h['eval_set']['correct_final']:.1%} right; scored by the saved folders reloaded from disk.

| model | figure | value |
|---|---|---|
| `lab-orm` | accuracy (threshold 0.5) | {orm['accuracy']:.3f} |
| `lab-orm` | AUROC, final correctness | {orm['auroc']:.3f} |
| `lab-prm` | step accuracy (threshold 0.5, {prm['steps']} steps) | {prm['step_accuracy']:.3f} |
| `lab-prm` | step AUROC | {prm['step_auroc']:.3f} |
| `lab-prm` | last-step score: AUROC, final correctness | {prm['last_step_auroc_final_correct']:.3f} |
| `lab-prm` | min-step score: AUROC, final correctness | {prm['min_step_auroc_final_correct']:.3f} |

Best-of-{m['args']['eval_per_problem']} accuracy on the {bo['problems']} problems (for information): first sample
{bo['first_sample']:.3f}, majority vote {bo['majority_vote']:.3f}, chosen by ORM {bo['orm']:.3f},
by PRM last step {bo['prm_last']:.3f}, by PRM min step {bo['prm_min']:.3f}, by the policy's own
lowest token log-probability {bo['policy_logprob']:.3f}; any sample right (oracle)
{bo['oracle_any_correct']:.3f}. Full numbers: `reward-metrics.json`.

**Limitation: these models rate how hard a problem is for the policy, not whether the
arithmetic is right.** Their AUROC pools solutions of different problems; within one problem
they barely tell a right solution from a wrong one (best-of-N by ORM/PRM is no better than
the first sample). Direct check on the first {c['items']} evaluation problems: the reference
solution scores above the same solution with its first result off by one in
{c['prm']['first_step_off_by_1']:.0%} of problems (PRM, first step), {c['prm']['last_step_off_by_1']:.0%} (PRM, last step),
{c['orm']['off_by_1']:.0%} (ORM); off by ten: {c['prm']['first_step_off_by_10']:.0%}, {c['prm']['last_step_off_by_10']:.0%}, {c['orm']['off_by_10']:.0%} (chance: 50%).
A training-free reference does verify: scoring each step by the lowest log-probability
`{rm.POLICY}` itself gave to any solution token so far gives step AUROC
{base['step_auroc']:.3f} and final-correctness AUROC {base['last_step_auroc_final_correct']:.3f} on the same solutions, and
best-of-N {bo['policy_logprob']:.3f}. Fine-tuning the policy's body for a few hundred steps
does not learn the comparison; variants tried at a smaller scale (lab-target's body, dense
per-token on-track targets, synthetic right/wrong pairs of the same problem, lr 3e-4 to 3e-3)
did not change that.
"""


def write_readme(out: Path, metrics: dict) -> None:
    path = out / "README.md"
    text = path.read_text() if path.exists() else ""
    if SECTION in text:
        text = text[:text.index(SECTION)]
    path.write_text(text.rstrip("\n") + "\n\n" + readme_section(metrics))


def heldout(policy, tok, args: argparse.Namespace, folders: dict[str, Path]) -> dict:
    """The held-out figures of the saved folders (``{"prm": path, "orm": path}``), reloaded
    from disk, on fresh samples of the evaluation problems."""
    evals = rm.eval_problems()
    eval_set = rm.build_samples(tok, evals, rm.sample_solutions(
        policy, tok, evals, args.eval_per_problem, args.eval_sample_seed))
    scores, contrast = {}, {}
    contrast_items = evals[:CONTRAST_ITEMS]
    for kind, (_name, sub) in rm.KINDS.items():
        model, _, _ = rm.load(str(folders[sub]))
        scores[sub] = rm.predict(model, eval_set, kind)
        contrast[sub] = rm.contrast(model, tok, kind, contrast_items)
    baseline = rm.policy_logprob_scores(policy, eval_set)
    best = rm.best_of_n(eval_set, {
        "orm": [ps[0] for ps in scores["orm"]],
        "prm_last": [ps[-1] if ps else 0.0 for ps in scores["prm"]],
        "prm_min": [min(ps) if ps else 0.0 for ps in scores["prm"]],
        "policy_logprob": [ps[-1] if ps else -1e9 for ps in baseline],
    })
    out = {"eval_set": rm.label_rates(eval_set) | {"problems": len(evals)},
           "prm": rm.process_metrics(eval_set, scores["prm"]),
           "orm": rm.outcome_metrics(eval_set, scores["orm"]),
           "best_of_n": best,
           "policy_logprob_baseline": rm.process_metrics(
               eval_set, [[math.exp(x) for x in ps] for ps in baseline]),
           "reference_beats_wrong_first_step": contrast | {"items": len(contrast_items)}}
    print(json.dumps(out), flush=True)
    return out


def write_infos(root: Path, seed: int, args: argparse.Namespace, h: dict) -> None:
    note = (f"{h['eval_set']['solutions']} solutions of {rm.POLICY} (temperature 1, "
            f"{args.eval_per_problem} per problem) on synthetic.arithmetic({rm.EVAL_PROBLEMS}, "
            f"seed=1), {h['eval_set']['correct_final']:.1%} right")
    bo_keys = ("problems", "first_sample", "majority_vote", "oracle_any_correct")
    best, contrast = h["best_of_n"], h["reference_beats_wrong_first_step"]
    rm.write_info(root / "prm", "process", seed, {
        "heldout": note, **h["prm"],
        "best_of_n": {k: best[k] for k in (*bo_keys, "prm_last", "prm_min")},
        "reference_beats_wrong_first_step": contrast["prm"] | {"items": contrast["items"]}})
    rm.write_info(root / "orm", "outcome", seed, {
        "heldout": note, **h["orm"],
        "best_of_n": {k: best[k] for k in (*bo_keys, "orm")},
        "reference_beats_wrong_first_step": contrast["orm"] | {"items": contrast["items"]}})


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.readme_only:
        write_readme(args.out, json.loads((args.out / "reward-metrics.json").read_text()))
        return 0
    torch.set_num_threads(args.threads)
    if args.evaluate_only:
        metrics = json.loads((args.out / "reward-metrics.json").read_text())
        metrics["data"].pop("eval", None)  # older runs kept the evaluation set there
        policy, tok = lab.load(rm.POLICY)
        saved = argparse.Namespace(**(vars(args) | {
            k: metrics["args"][k] for k in ("eval_per_problem", "eval_sample_seed")}))
        metrics["heldout"] = heldout(policy, tok, saved,
                                     {sub: args.out / sub for sub in ("prm", "orm")})
        write_infos(args.out, metrics["seed"], saved, metrics["heldout"])
        (args.out / "reward-metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        write_readme(args.out, metrics)
        return 0
    command = " ".join(["nice -n 10 .venv/bin/python scripts/train_reward_models.py"] + [
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)])
    torch.manual_seed(args.seed)
    wall = time.perf_counter()

    policy, tok = lab.load(rm.POLICY)
    problems = rm.training_problems(args.problems, args.problem_seed)
    order = list(range(len(problems)))
    random.Random(f"reward-val/{args.seed}").shuffle(order)
    n_val = round(len(problems) * args.val_share)
    val_ids = set(order[:n_val])

    t = time.perf_counter()
    solutions = rm.sample_solutions(policy, tok, problems, args.per_problem, args.sample_seed)
    sampling_seconds = round(time.perf_counter() - t, 1)
    samples = rm.build_samples(tok, problems, solutions)
    train_set = [s for s in samples if s.problem not in val_ids]
    val_set = [s for s in samples if s.problem in val_ids]
    data = {"train": {"problems": len(problems) - n_val, **rm.label_rates(train_set)},
            "val": {"problems": n_val, **rm.label_rates(val_set)},
            "sampling_seconds": sampling_seconds,
            "dropped_heldout_prompts": args.problems - len(problems)}
    print(json.dumps({"data": data}), flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".reward-", dir=args.out))
    training = {}
    try:
        for kind, (_name, sub) in rm.KINDS.items():
            model = rm.new_reward_model(kind, lab.folder(rm.POLICY), args.seed)
            cfg = rm.TrainConfig(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                                 seed=args.seed)
            training[sub] = rm.train(model, kind, train_set, val_set, cfg)
            rm.save(model, lab.folder(rm.POLICY), tmp / sub)
            rm.write_info(tmp / sub, kind, args.seed, {})
        results = heldout(policy, tok, args, {sub: tmp / sub for sub in ("prm", "orm")})
        write_infos(tmp, args.seed, args, results)
        for path in [*tmp.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        sizes = {sub: round(sum(p.stat().st_size for p in (tmp / sub).rglob("*")
                                if p.is_file()) / 1e6, 3) for sub in ("prm", "orm")}
        for sub in ("prm", "orm"):
            if (args.out / sub).exists():
                shutil.rmtree(args.out / sub)
            (tmp / sub).rename(args.out / sub)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    metrics = {
        "seed": args.seed, "command": command, "args": {k: str(v) if isinstance(v, Path) else v
                                                        for k, v in vars(args).items()},
        "policy": rm.POLICY, "data": data,
        "training": training,
        "heldout": results,
        "folder_mb": sizes,
        "wall_seconds": round(time.perf_counter() - wall, 1),
        "cpu_seconds": round(time.process_time(), 1),
        "machine": f"{platform.platform()}, torch {torch.__version__}, {args.threads} thread(s)",
    }
    (args.out / "reward-metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    write_readme(args.out, metrics)
    print(json.dumps({k: metrics[k] for k in ("heldout", "folder_mb", "wall_seconds")},
                     indent=2), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
