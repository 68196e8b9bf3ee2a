"""A small same-tokenizer companion for SmolLM2, derived by our code on CPU.

No smaller model on SmolLM2's tokenizer ships in a package, and contrastive
decoding (an *amateur*) and speculative decoding (a *draft*) both need one.
Recipe (seeded, a few CPU minutes):

1. **Truncate**: keep the target's embeddings, its first ``layers`` decoder
   layers, its final norm and its (tied) head: a Llama with ``layers`` instead
   of 30 layers (``layers=6``: 49 M parameters of 135 M, about a third of the
   compute per token, most of it in the 28 M-parameter head).
2. **Distil on the target's own greedy generations** (sequence-level
   knowledge distillation, Kim & Rush 2016): the target writes greedy
   continuations of seeded open-ended, JSON and question prompts (training
   seed, disjoint from the bench's evaluation prompts), and the truncated
   model is trained with cross-entropy on those continuation tokens for a
   fixed number of steps; the embeddings/head stay frozen (they are shared
   with the target's vocabulary space), the kept layers and the norm train.
3. **Measure** greedy token agreement with the target on held-out prompts:
   the share of the target's greedy tokens (EOS included) that the
   companion's argmax also picks when fed the target's continuation, i.e. the
   per-token acceptance rate of greedy speculative decoding. It is stored in
   the folder's marker file and shown by ``sglang-ilsi models list``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sglang_ilsi_lab.data import open_ended, synthetic

LAYERS = 6
STEPS = 120
BATCH = 8
LR = 3e-4
GEN_TOKENS = 48
TRAIN_PROMPTS = 160
EVAL_PROMPTS = 24
SEED = 0


def _prompts(seed: int, n: int) -> list[str]:
    """Chat-style prompts: open-ended writing, JSON extraction and fact questions."""
    third = max(1, n // 3)
    texts = [it["prompt"] for it in open_ended.open_ended(n - 2 * third, seed=seed)]
    texts += ["Extract the person's name, age, city and job from this sentence as JSON: "
              + it["sentence"] for it in synthetic.json_extraction(third, seed=seed)]
    texts += [it["question"] for it in synthetic.conflict(third, seed=seed)]
    return texts


def _chat_ids(tokenizer: Any, prompt: str) -> list[int]:
    ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}],
                                        add_generation_prompt=True, tokenize=True)
    if hasattr(ids, "keys"):
        ids = ids["input_ids"]
    return [int(i) for i in ids]


def greedy_continuations(model: Any, tokenizer: Any, prompts: Sequence[list[int]],
                         max_new_tokens: int, batch_size: int = 16) -> list[list[int]]:
    """Greedy continuations (EOS kept when generated), batched with left padding."""
    import torch

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    eos = tokenizer.eos_token_id
    outs: list[list[int]] = []
    for i in range(0, len(prompts), batch_size):
        batch = prompts[i:i + batch_size]
        width = max(len(p) for p in batch)
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in batch])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch])
        with torch.no_grad():
            gen = model.generate(input_ids=ids, attention_mask=mask, do_sample=False,
                                 max_new_tokens=max_new_tokens, eos_token_id=eos,
                                 pad_token_id=pad)
        for row in gen[:, width:].tolist():
            outs.append(row[:row.index(eos) + 1] if eos in row else row)
    return outs


def token_agreement(student: Any, prompts: Sequence[list[int]],
                    continuations: Sequence[list[int]]) -> float:
    """Share of the continuation tokens the student's argmax picks (teacher forcing)."""
    import torch

    hits = total = 0
    for p, cont in zip(prompts, continuations):
        if not cont:
            continue
        full = p + cont
        with torch.no_grad():
            logits = student(torch.tensor([full[:-1]])).logits[0]
        picks = logits[len(p) - 1:].argmax(-1).tolist()
        hits += sum(a == b for a, b in zip(picks, cont))
        total += len(cont)
    return hits / max(1, total)


def truncate(target: Any, layers: int) -> Any:
    """A fresh Llama with the target's first ``layers`` layers, norm and head."""
    import copy

    from transformers import AutoModelForCausalLM

    n = target.config.num_hidden_layers
    if not 1 <= layers < n:
        raise ValueError(f"layers must be between 1 and {n - 1}, got {layers}")
    config = copy.deepcopy(target.config)
    config.num_hidden_layers = layers
    if getattr(config, "layer_types", None):
        config.layer_types = config.layer_types[:layers]
    student = AutoModelForCausalLM.from_config(config, dtype=target.dtype)
    state = {k: v for k, v in target.state_dict().items()
             if not k.startswith("model.layers.") or int(k.split(".")[2]) < layers}
    result = student.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise RuntimeError(f"truncation: keys do not match: missing {result.missing_keys[:5]}, "
                           f"unexpected {result.unexpected_keys[:5]}")
    return student


def build(target_dir: Path, out_dir: Path, *, layers: int = LAYERS, steps: int = STEPS,
          seed: int = SEED, log: Any = print) -> dict[str, Any]:
    """Derive, distil, measure and save the companion into ``out_dir``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    start = time.perf_counter()
    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(target_dir)
    target = AutoModelForCausalLM.from_pretrained(target_dir, dtype=torch.float32).eval()
    train_prompts = [_chat_ids(tokenizer, p) for p in _prompts(synthetic.TRAIN_SEED,
                                                                TRAIN_PROMPTS)]
    eval_prompts = [_chat_ids(tokenizer, p) for p in _prompts(synthetic.EVAL_SEED,
                                                               EVAL_PROMPTS)]
    log(f"[amateur] target greedy continuations of {len(train_prompts)} + "
        f"{len(eval_prompts)} prompts ...")
    train_conts = greedy_continuations(target, tokenizer, train_prompts, GEN_TOKENS)
    eval_conts = greedy_continuations(target, tokenizer, eval_prompts, GEN_TOKENS)
    gen_seconds = time.perf_counter() - start

    student = truncate(target, layers)
    del target
    before = token_agreement(student.eval(), eval_prompts, eval_conts)
    log(f"[amateur] {layers} layers kept; agreement before distillation {before:.3f}")

    for name, param in student.named_parameters():
        param.requires_grad = not name.startswith(("model.embed_tokens", "lm_head"))
    trainable = [p for p in student.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=LR, weight_decay=0.0)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    rows = [(p, c) for p, c in zip(train_prompts, train_conts) if c]
    rng = torch.Generator().manual_seed(seed)
    student.train()
    train_start = time.perf_counter()
    losses: list[float] = []
    for step in range(steps):
        pick = torch.randint(len(rows), (BATCH,), generator=rng).tolist()
        batch = [rows[i] for i in pick]
        width = max(len(p) + len(c) for p, c in batch)
        ids = torch.full((BATCH, width), pad)
        labels = torch.full((BATCH, width), -100)
        mask = torch.zeros((BATCH, width), dtype=torch.long)
        for b, (p, c) in enumerate(batch):
            full = p + c
            ids[b, :len(full)] = torch.tensor(full)
            labels[b, len(p):len(full)] = torch.tensor(c)  # loss on the target's tokens only
            mask[b, :len(full)] = 1
        lr = LR * min(1.0, (step + 1) / 10) * (0.1 + 0.9 * (1 - step / steps))
        for group in opt.param_groups:
            group["lr"] = lr
        loss = student(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()
        losses.append(loss.item())
        if step % 20 == 0 or step == steps - 1:
            log(f"[amateur] step {step + 1}/{steps} loss {losses[-1]:.3f}")
    train_seconds = time.perf_counter() - train_start
    student.eval()
    after = token_agreement(student, eval_prompts, eval_conts)
    log(f"[amateur] agreement after distillation {after:.3f}")

    student.config.dtype = "float32"
    student.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return {
        "layers": layers, "parameters": sum(p.numel() for p in student.parameters()),
        "greedy_token_agreement": round(after, 4),
        "greedy_token_agreement_before_distillation": round(before, 4),
        "agreement_eval": {"prompts": len(eval_prompts), "tokens": sum(map(len, eval_conts)),
                           "seed": synthetic.EVAL_SEED},
        "distillation": {"steps": steps, "batch": BATCH, "lr": LR, "seed": seed,
                         "prompts": len(train_prompts), "tokens": sum(map(len, train_conts)),
                         "first_loss": round(losses[0], 4) if losses else None,
                         "final_loss": round(sum(losses[-10:]) / max(1, len(losses[-10:])), 4)
                         if losses else None,
                         "seconds": round(train_seconds, 1)},
        "generation_seconds": round(gen_seconds, 1),
        "seconds": round(time.perf_counter() - start, 1),
    }


def read_report(folder: Path, marker: str) -> dict[str, Any] | None:
    try:
        return json.loads((folder / marker).read_text())
    except (OSError, ValueError):
        return None
