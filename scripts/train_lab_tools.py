#!/usr/bin/env python
"""Fine-tune lab-target into ``lab-tools``, a model that calls the calculator by itself.

    nice -n 10 .venv/bin/python scripts/train_lab_tools.py

Trains on tool-loop transcripts (:mod:`sglang_ilsi.models.lab_tools`): 70%
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

from sglang_ilsi.data import synthetic
from sglang_ilsi.models import lab, lab_tools


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
    return p.parse_args(argv)


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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    model, tok = lab.load(args.base)
    sets = {"arithmetic": synthetic.arithmetic(200, seed=1),
            "arithmetic_4ops": synthetic.arithmetic(100, seed=1, difficulty=4),
            "json": synthetic.json_extraction(100, seed=1)}
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
    print(json.dumps({"tool_loop": tuned, "seconds": metrics["script_seconds"]}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
