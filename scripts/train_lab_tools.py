#!/usr/bin/env python
"""Fine-tune lab-target into ``lab-tools``, a model that calls the calculator by itself.

    nice -n 10 .venv/bin/python scripts/train_lab_tools.py

Trains on tool-loop transcripts (:mod:`sglang_ilsi_lab.models.lab_tools`): 70%
arithmetic with 1-4 operations, where the model writes a calculator call and
then ``#### N`` from the appended result, 30% JSON extraction answered
directly. Loss on the model-written pieces only. Then reloads the saved
folder and runs the tool loop without a server (:func:`lab_tools.run_loop`,
the real calculator) on the held-out sets (seed 1): 200 arithmetic items
(1-3 operations), 100 four-operation items and 100 JSON items, and reports
accuracy and how often a call was made, next to the base model's greedy
accuracy. Writes ``OUT/tools`` (float32, with a chat template that shows the
model the user's message as ``Q: ...\\nA:``) and ``OUT/tools-metrics.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import tempfile
import time
from pathlib import Path

import torch

from sglang_ilsi_lab.data import synthetic
from sglang_ilsi_lab.models import lab, lab_tools


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--items", type=int, default=24000)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--base", default="lab-target")
    p.add_argument("--out", type=Path, default=lab.LAB_DIR)
    p.add_argument("--readme-only", action="store_true",
                   help="only rewrite OUT/tools/README.md from OUT/tools-metrics.json")
    p.add_argument("--evaluate-only", action="store_true",
                   help="only re-evaluate OUT/tools and update its metrics and README")
    return p.parse_args(argv)


def held_out() -> dict[str, list[dict]]:
    return {"arithmetic": synthetic.arithmetic(200, seed=1),
            "arithmetic_4ops": synthetic.arithmetic(100, seed=1, difficulty=4),
            "json": synthetic.json_extraction(100, seed=1)}


def evaluate(model, tok, sets: dict[str, list[dict]]) -> dict[str, dict[str, float]]:
    out = {}
    for name, items in sets.items():
        right = called = 0
        for item in items:
            text, calls = lab_tools.run_loop(model, tok, item["prompt"])
            right += synthetic.check(item["task"], text, item)
            called += bool(calls)
        out[name] = {"accuracy": right / len(items), "called_tool": called / len(items)}
        print(json.dumps({name: out[name]}), flush=True)
    return out


def readme(m: dict) -> str:
    """The model card of ``lab-tools`` from its metrics."""
    t, base = m["tool_loop"], m["base_greedy_accuracy"]
    train = m["training"]
    rows = "\n".join(
        f"| {name} | {base[name]:.3f} | {t[name]['accuracy']:.3f} | {t[name]['called_tool']:.2f} |"
        for name in t)
    return f"""# lab-tools

`{m['base']}` fine-tuned by `scripts/train_lab_tools.py` on the plugin's tool-loop
transcripts (`lab/sglang_ilsi_lab/models/lab_tools.py`): for an arithmetic question it writes a
calculator call, reads the result the server appends and answers `#### N`; for a
JSON-extraction prompt it answers directly. Same tokenizer as the lab pair, plus a chat
template that shows the model the user's message as `Q: ...\\nA:` (the tools' system text is
not shown: the model calls the calculator without being told how).

Held-out sets (seed 1), greedy. "Base" is `{m['base']}` decoding alone; "tool loop" is this
model in the loop with the real calculator (`lab_tools.run_loop`, no server, no call
grammar); "called" is the share of items where it made a call.

| set | base accuracy | tool-loop accuracy | called |
|---|---|---|---|
{rows}

Training: {m['items']} transcripts (70% arithmetic with 1-4 operations, 30% JSON), packed into
{m['rows']} rows of 256 tokens, loss on the model-written pieces only; {train['steps']} steps of
16 rows, peak lr {train['config']['lr']}, 50 warmup steps, cosine; final loss
{train['final_loss']:.4f}; {train['seconds'] / 60:.1f} min of training, {m['script_seconds'] / 60:.1f} min
for the whole script ({m['machine']}).
"""


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.readme_only or args.evaluate_only:
        metrics = json.loads((args.out / "tools-metrics.json").read_text())
        if args.evaluate_only:
            torch.set_num_threads(args.threads)
            model, tok = lab.load(str(args.out / "tools"))
            metrics["tool_loop"] = evaluate(model, tok, held_out())
            (args.out / "tools-metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        (args.out / "tools" / "README.md").write_text(readme(metrics))
        return 0
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    model, tok = lab.load(args.base)
    sets = held_out()
    base = {name: lab.accuracy(model, tok, items)[0] for name, items in sets.items()}
    print(json.dumps({"base_greedy": base}), flush=True)

    items = lab_tools.training_items(args.items, args.seed)
    examples = lab_tools.encode(tok, items)
    ids, labels = lab.pack(examples, args.seq_len, tok.eos_token_id)
    print(json.dumps({"items": len(items), "rows": len(ids)}), flush=True)
    model.train()
    cfg = lab.TrainConfig(steps=args.steps, lr=args.lr, batch_size=args.batch_size,
                          seq_len=args.seq_len, warmup=50, seed=args.seed)
    run = lab.train(model, ids, labels, cfg)

    tok.chat_template = lab_tools.CHAT_TEMPLATE
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / "tools"
        lab.save(model, tok, staged, "float32", {"base": args.base, "steps": args.steps})
        reloaded = lab.load(str(staged))[0]
        tuned = evaluate(reloaded, tok, sets)
        target = args.out / "tools"
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(staged, target)
    metrics = {
        "base": args.base, "base_greedy_accuracy": base, "tool_loop": tuned,
        "training": {k: v for k, v in run.items() if k != "history"},
        "loss_history": run["history"], "items": len(items), "rows": len(ids),
        "script_seconds": round(time.perf_counter() - start, 1),
        "machine": f"{platform.platform()}, torch {torch.__version__}, {args.threads} thread(s)",
    }
    (args.out / "tools-metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (target / "README.md").write_text(readme(metrics))
    print(json.dumps({"tool_loop": tuned, "seconds": metrics["script_seconds"]}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
