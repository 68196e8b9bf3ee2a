#!/usr/bin/env python
"""Train the lab pair (target, target-early, draft) on CPU and commit the folders.

    nice -n 10 .venv/bin/python scripts/train_lab_pair.py

Trains a byte-level BPE tokenizer (vocab 512, one token per digit) on text
from :mod:`sglang_ilsi_lab.data.synthetic`, then a Llama target and a small draft
on 70% arithmetic / 30% JSON extraction with the loss on answer tokens only
(see :mod:`sglang_ilsi_lab.models.lab`). Snapshots of the target are kept every
``--snapshot-every`` steps; ``target-early`` is the one whose greedy accuracy
on a *selection* set of arithmetic problems (seed 7, disjoint from the
reported evaluation set) is closest to ``--early-accuracy``. Every model is
then saved, reloaded from disk and evaluated on the held-out sets (seed 1):
200 arithmetic + 100 JSON items, plus 100 four-operation problems (outside
the training distribution) for information. Weights are saved as float32
unless the three folders would exceed ``--max-mb``; then a model's weights
are stored as bfloat16 only if its greedy outputs on the evaluation prompts
are identical to float32 (computation stays float32: ``config.json`` says
``"dtype": "float32"``). Writes ``metrics.json`` and ``README.md`` next to
the folders.
"""

from __future__ import annotations

import argparse
import copy
import json
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from sglang_ilsi_lab.data import synthetic
from sglang_ilsi_lab.models import lab


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--target-steps", type=int, default=2600)
    p.add_argument("--draft-steps", type=int, default=1800)
    p.add_argument("--target-lr", type=float, default=4e-3)
    p.add_argument("--draft-lr", type=float, default=5e-3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--snapshot-every", type=int, default=50)
    p.add_argument("--early-accuracy", type=float, default=0.65,
                   help="target-early: the snapshot closest to this selection-set accuracy")
    p.add_argument("--max-mb", type=float, default=10.0)
    p.add_argument("--out", type=Path, default=lab.LAB_DIR)
    p.add_argument("--readme-only", action="store_true",
                   help="only rewrite OUT/README.md from OUT/metrics.json")
    return p.parse_args(argv)


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def rounded(model, dtype):
    """A float32 copy of ``model`` whose weights went through ``dtype``."""
    m = copy.deepcopy(model)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(p.to(dtype).to(torch.float32))
    return m.eval()


def evaluate(model, tok, sets: dict[str, list[dict]]) -> tuple[dict[str, float], dict]:
    scores, outputs = {}, {}
    for name, items in sets.items():
        acc, texts = lab.accuracy(model, tok, items)
        scores[name] = round(acc, 4)
        outputs[name] = texts
    return scores, outputs


def folder_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.readme_only:
        metrics = json.loads((args.out / "metrics.json").read_text())
        (args.out / "README.md").write_text(readme(metrics))
        return 0
    command = " ".join(["nice -n 10 .venv/bin/python scripts/train_lab_pair.py"] + [
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)])
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    wall = time.perf_counter()

    # tokenizer and data
    tok = lab.train_tokenizer(lab.tokenizer_corpus(args.seed))
    n_items = int(max(args.target_steps, args.draft_steps) * args.batch_size * 2.9)
    items = lab.training_items(n_items, args.seed)
    examples = lab.encode(tok, items)
    ids, labels = lab.pack(examples, args.seq_len, tok.eos_token_id)
    data = {"training_items": len(items), "rows": len(ids), "seq_len": args.seq_len,
            "row_fill": round(sum(len(x) for x, _ in examples) / ids.numel(), 4),
            "supervised_share": round(float((labels != -100).float().mean()), 4)}
    print(json.dumps({"data": data}), flush=True)

    # target, with snapshots
    target = lab.new_model(lab.TARGET_ARCH, tok, args.seed)
    snapshots: dict[int, dict] = {}

    def keep(step: int, _info: dict) -> None:
        if step % args.snapshot_every == 0 and step < args.target_steps:
            snapshots[step] = {k: v.detach().clone() for k, v in target.state_dict().items()}

    t_cfg = lab.TrainConfig(steps=args.target_steps, lr=args.target_lr,
                            batch_size=args.batch_size, seq_len=args.seq_len, seed=args.seed)
    target_run = lab.train(target, ids, labels, t_cfg, on_step=keep)

    # draft on the same rows, its own order
    draft = lab.new_model(lab.DRAFT_ARCH, tok, args.seed + 1)
    d_cfg = lab.TrainConfig(steps=args.draft_steps, lr=args.draft_lr,
                            batch_size=args.batch_size, seq_len=args.seq_len, seed=args.seed + 1)
    draft_run = lab.train(draft, ids, labels, d_cfg)

    # target-early: chosen on the selection set, reported on the evaluation set
    select = synthetic.arithmetic(200, seed=lab.SELECT_SEED)
    curve = {}
    probe = lab.new_model(lab.TARGET_ARCH, tok, args.seed).eval()
    for step, state in sorted(snapshots.items()):
        probe.load_state_dict(state)
        curve[step] = round(lab.accuracy(probe, tok, select)[0], 4)
        print(json.dumps({"snapshot": step, "select_arith_acc": curve[step]}), flush=True)
    early_step = min(curve, key=lambda s: (abs(curve[s] - args.early_accuracy), s))
    early = lab.new_model(lab.TARGET_ARCH, tok, args.seed).eval()
    early.load_state_dict(snapshots[early_step])

    sets = {
        "arithmetic": synthetic.arithmetic(200, seed=synthetic.EVAL_SEED),
        "json": synthetic.json_extraction(100, seed=synthetic.EVAL_SEED),
        "arithmetic_4ops": synthetic.arithmetic(100, seed=synthetic.EVAL_SEED, difficulty=4),
    }
    agree_prompts = ([it["prompt"] for it in sets["arithmetic"][:70]]
                     + [it["prompt"] for it in sets["json"][:30]])
    models = {"target": target, "target-early": early, "draft": draft}

    # storage dtype: float32 unless too big; bfloat16 only where greedy is unchanged
    check_prompts = [it["prompt"] for s in ("arithmetic", "json") for it in sets[s]]
    bf16_identical, bf16_compute_identical = {}, {}
    for name, model in models.items():
        ref = lab.greedy(model, tok, check_prompts)
        bf16_identical[name] = lab.greedy(rounded(model, torch.bfloat16), tok, check_prompts) == ref
        in_bf16 = copy.deepcopy(model).to(torch.bfloat16).eval()
        bf16_compute_identical[name] = sum(
            a == b for a, b in zip(lab.greedy(in_bf16, tok, check_prompts), ref))
    fp32_mb = sum(n_params(m) * 4 / 1e6 for m in models.values())
    weights_dtype = {name: "float32" for name in models}
    if fp32_mb > args.max_mb - 0.3:  # tokenizer files and configs take the rest
        for name in ("target-early", "target", "draft"):
            if bf16_identical[name]:
                weights_dtype[name] = "bfloat16"
    print(json.dumps({"bf16_identical": bf16_identical,
                      "bf16_compute_identical_of_300": bf16_compute_identical,
                      "weights_dtype": weights_dtype}), flush=True)

    # save into a temporary folder, reload from disk, evaluate what was saved
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".lab-", dir=args.out.parent))
    runs = {"target": target_run, "target-early": target_run, "draft": draft_run}
    archs = {"target": lab.TARGET_ARCH, "target-early": lab.TARGET_ARCH, "draft": lab.DRAFT_ARCH}
    for name, model in models.items():
        step = early_step if name == "target-early" else runs[name]["steps"]
        lab.save(model, tok, tmp / name, weights_dtype[name], {
            "name": f"lab-{name}", "seed": args.seed, "step": step,
            "arch": archs[name].__dict__, "parameters": n_params(model)})
    reloaded = {}
    for name in models:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        reloaded[name] = AutoModelForCausalLM.from_pretrained(
            tmp / name, dtype=torch.float32).eval()
        rtok = AutoTokenizer.from_pretrained(tmp / name)
        assert rtok("Q: 12+34=?\nA:")["input_ids"] == tok("Q: 12+34=?\nA:")["input_ids"]
    results = {}
    for name, model in reloaded.items():
        scores, _ = evaluate(model, tok, sets)
        results[name] = scores
        print(json.dumps({name: scores}), flush=True)
    agreement = round(lab.token_agreement(reloaded["draft"], reloaded["target"], tok,
                                          agree_prompts), 4)
    agreement_early = round(lab.token_agreement(reloaded["draft"], reloaded["target-early"],
                                                tok, agree_prompts), 4)

    sizes = {name: round(folder_mb(tmp / name), 3) for name in models}
    total_mb = round(sum(sizes.values()), 3)
    if total_mb > args.max_mb:
        shutil.rmtree(tmp)
        raise SystemExit(f"the folders take {total_mb} MB > {args.max_mb} MB: shrink the target")

    def run_summary(run: dict) -> dict:
        return {k: run[k] for k in ("steps", "tokens", "supervised_tokens", "seconds",
                                    "cpu_seconds", "final_loss")} | {"lr": run["config"]["lr"],
                                                      "history": run["history"]}

    metrics = {
        "seed": args.seed,
        "command": command,
        "threads": args.threads,
        "data": data,
        "tokenizer": {"vocab_size": len(tok), "digits": "one token per digit"},
        "models": {name: {"parameters": n_params(models[name]), "arch": archs[name].__dict__,
                          "weights_dtype": weights_dtype[name], "folder_mb": sizes[name],
                          "step": early_step if name == "target-early" else runs[name]["steps"]}
                   for name in models},
        "total_mb": total_mb,
        "training": {"target": run_summary(target_run), "draft": run_summary(draft_run),
                     "total_seconds": round(target_run["seconds"] + draft_run["seconds"], 1)},
        "target_early": {"selection_seed": lab.SELECT_SEED, "wanted": args.early_accuracy,
                         "step": early_step, "selection_curve": curve},
        "bf16_check": {"prompts": len(check_prompts), "identical_bf16_weights": bf16_identical,
                       "identical_outputs_bf16_compute": bf16_compute_identical},
        "eval": {"seed": synthetic.EVAL_SEED, "sizes": {k: len(v) for k, v in sets.items()},
                 "greedy_accuracy": results,
                 "draft_token_agreement": {"with_target": agreement,
                                           "with_target_early": agreement_early,
                                           "prompts": len(agree_prompts)}},
        "wall_seconds": round(time.perf_counter() - wall, 1),
    }
    (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (tmp / "README.md").write_text(readme(metrics))
    for path in [tmp, *tmp.rglob("*")]:  # mkdtemp and safetensors write private files
        path.chmod(0o755 if path.is_dir() else 0o644)
    if args.out.exists():
        shutil.rmtree(args.out)
    tmp.rename(args.out)
    print(json.dumps({k: metrics[k] for k in ("total_mb", "eval", "wall_seconds")}, indent=2))
    return 0


def readme(m: dict) -> str:
    ev = m["eval"]["greedy_accuracy"]
    tr = m["training"]
    rows = "\n".join(
        f"| `{name}` | {info['parameters'] / 1e6:.3f} M | {info['weights_dtype']} | "
        f"{info['folder_mb']:.2f} MB | {info['step']} | {ev[name]['arithmetic']:.3f} | "
        f"{ev[name]['json']:.3f} | {ev[name]['arithmetic_4ops']:.3f} |"
        for name, info in m["models"].items())
    curve = ", ".join(f"{s}: {a:.2f}" for s, a in m["target_early"]["selection_curve"].items())
    arch = m["models"]
    d = m["data"]
    return f"""# The lab pair

Three Llama-architecture models trained on CPU by `scripts/train_lab_pair.py` on
checkable synthetic tasks (`lab/sglang_ilsi_lab/data/synthetic.py`): multi-step +/- arithmetic with
worked steps and a `#### N` answer (1-3 operations, operands 0-99) and JSON record
extraction (name, age, city, job). They share one tokenizer: byte-level BPE, vocab
{m['tokenizer']['vocab_size']}, one token per digit, no chat template, no BOS; generation
ends at `<|endoftext|>` (id 0). Prompts are plain text, e.g. `"Q: 23+45-12=?\\nA:"` (the
model writes `" 23+45=68\\n68-12=56\\n#### 56"`) or
`"Extract JSON: Alice is a 34-year-old teacher from Paris.\\nJSON:"`.

| model | parameters | weights | folder | step | arithmetic (200) | JSON (100) | 4 ops (100, OOD) |
|---|---|---|---|---|---|---|---|
{rows}

Greedy accuracy on held-out items (seed {m['eval']['seed']}: `synthetic.arithmetic(200, seed=1)`,
`synthetic.json_extraction(100, seed=1)`, `synthetic.arithmetic(100, seed=1, difficulty=4)`),
measured on the folders as saved, reloaded with transformers in float32, batched greedy
decoding (left padding, at most 64 new tokens). Draft greedy token agreement (the share of the
target's greedy tokens, EOS included, that the draft's argmax picks when fed the target's
continuation; {m['eval']['draft_token_agreement']['prompts']} prompts: 70 arithmetic + 30 JSON):
**{m['eval']['draft_token_agreement']['with_target']:.3f}** with `target`,
{m['eval']['draft_token_agreement']['with_target_early']:.3f} with `target-early`.

## Architectures
- `target`, `target-early`: hidden {arch['target']['arch']['hidden_size']}, {arch['target']['arch']['num_layers']} layers, {arch['target']['arch']['num_heads']} heads, FFN {arch['target']['arch']['intermediate_size']}, tied embeddings.
- `draft`: hidden {arch['draft']['arch']['hidden_size']}, {arch['draft']['arch']['num_layers']} layers, {arch['draft']['arch']['num_heads']} heads, FFN {arch['draft']['arch']['intermediate_size']}, tied embeddings.

{storage(m)}

## Training
Seed {m['seed']}, {m['threads']} CPU thread, `torch` under `nice -n 10`. Command:

```
{m['command']}
```

- Data: {d['training_items']} training items (70% arithmetic, 30% JSON, seed {m['seed']}, every
  evaluation/selection prompt removed), packed whole into {d['rows']} rows of {d['seq_len']}
  tokens ({d['row_fill']:.1%} filled). Loss on answer tokens (and the closing EOS) only:
  prompt tokens and padding are masked ({d['supervised_share']:.1%} of row tokens supervised).
- AdamW (betas 0.9/0.95, weight decay 0.1 on matrices), 100 warmup steps, cosine to 10% of
  the peak, batches of 32 rows, gradient clipping 1.0.
- `target`: {tr['target']['steps']} steps, peak lr {tr['target']['lr']}, {tr['target']['tokens'] / 1e6:.2f} M row tokens
  ({tr['target']['supervised_tokens'] / 1e6:.2f} M supervised), {tr['target']['seconds'] / 60:.1f} min, final loss {tr['target']['final_loss']:.3f}.
- `draft`: {tr['draft']['steps']} steps, peak lr {tr['draft']['lr']}, {tr['draft']['tokens'] / 1e6:.2f} M row tokens
  ({tr['draft']['supervised_tokens'] / 1e6:.2f} M supervised), {tr['draft']['seconds'] / 60:.1f} min, final loss {tr['draft']['final_loss']:.3f}.
- Total training time {tr['total_seconds'] / 60:.1f} min wall clock; whole script {m['wall_seconds'] / 60:.1f} min
  (tokenizer, data, evaluation included). {cpu_line(m)}
- `target-early` is the snapshot (every 50 steps) of the same target run whose greedy accuracy
  on a selection set (`synthetic.arithmetic(200, seed={m['target_early']['selection_seed']})`, disjoint from the
  reported set) is closest to {m['target_early']['wanted']}: step {m['target_early']['step']}.
  Selection-set accuracy by step: {curve}.

Full numbers, loss curves included: `metrics.json`.
{notes(m)}"""


def storage(m: dict) -> str:
    check = m["bf16_check"]
    dtypes = {name: info["weights_dtype"] for name, info in m["models"].items()}
    same = ", ".join(f"`{n}` {'yes' if ok else 'no'}"
                     for n, ok in check["identical_bf16_weights"].items())
    compute = ", ".join(f"`{n}` {k}" for n, k in check["identical_outputs_bf16_compute"].items())
    if all(d == "float32" for d in dtypes.values()):
        head = ("Weights are stored in float32 and `config.json` says `\"dtype\": \"float32\"`. "
                "The three folders fit in 10 MB that way because the target is ~1.07 M "
                "parameters rather than ~1.9 M (see the notes below).")
    else:
        stored = ", ".join(f"`{n}`" for n, d in dtypes.items() if d != "float32")
        head = (f"`config.json` says `\"dtype\": \"float32\"` (compute in float32); the weights "
                f"of {stored} are stored as bfloat16 to keep the folders under 10 MB, which was "
                "allowed only because their greedy outputs with bfloat16-rounded weights are "
                "identical to float32 on every evaluation prompt.")
    return (f"{head}\n\nbfloat16 check on the {check['prompts']} evaluation prompts (arithmetic + "
            f"JSON): greedy outputs with bfloat16-rounded weights identical to float32 for "
            f"{same}; outputs unchanged when *computing* in bfloat16, out of {check['prompts']}: "
            f"{compute}.")


def cpu_line(m: dict) -> str:
    tr = m["training"]
    if "cpu_seconds" in tr["target"]:
        cpu = tr["target"]["cpu_seconds"] + tr["draft"]["cpu_seconds"]
        return f"CPU time of training: {cpu / 60:.1f} min."
    cpu = m.get("notes", {}).get("cpu_seconds_whole_script")
    return f"CPU time of the whole script: {cpu / 60:.1f} min." if cpu else ""


def notes(m: dict) -> str:
    items = m.get("notes", {}).get("remarks", [])
    if not items:
        return ""
    return "\n## Notes\n" + "".join(f"- {line}\n" for line in items)


if __name__ == "__main__":
    raise SystemExit(main())
