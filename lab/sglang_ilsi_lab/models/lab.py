"""The lab pair: a small target/draft pair trained on CPU on checkable tasks.

``lab/sglang_ilsi_lab/models/lab_pair/`` holds three Hugging Face folders that share
one tokenizer (see its README.md for how they were trained and what they
score):

- ``target/``: a Llama-architecture model trained on multi-step +/-
  arithmetic with worked steps and a ``#### N`` answer, and on JSON record
  extraction (:mod:`sglang_ilsi_lab.data.synthetic`);
- ``target-early/``: an earlier checkpoint of the same run, whose greedy
  accuracy on held-out arithmetic is well below the final one, so that
  selection methods (self-consistency, best-of-N...) have room to show gains;
- ``draft/``: a much smaller model on the same tokenizer and data, for
  speculative decoding and as a contrastive-decoding amateur.

The tokenizer is byte-level BPE (vocab 512) whose pre-tokenizer splits every
digit into its own token. It has no chat template and adds no BOS:
prompts are plain text such as ``"Q: 23+45-12=?\\nA:"`` and generation stops
at ``<|endoftext|>`` (id 0). Prompts are the ``prompt`` field of the
synthetic items; the model writes the ``answer`` field.

This module holds the recipe (tokenizer, configurations, packing, training
loop, evaluation) used by ``scripts/train_lab_pair.py`` and the helpers tests
use to load and score the committed folders. The folders are committed, not
built at run time, so nothing here runs on import.
"""

from __future__ import annotations

import copy
import json
import math
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sglang_ilsi_lab.data import synthetic

LAB_DIR = Path(__file__).resolve().parent / "lab_pair"
FOLDERS = {"lab-target": "target", "lab-target-early": "target-early", "lab-draft": "draft",
           "lab-tools": "tools", "lab-prm": "prm", "lab-orm": "orm",
           "lab-verifier": "verifier"}
EOS = "<|endoftext|>"
SPECIAL_TOKENS = [EOS]
MAX_NEW_TOKENS = 64


def folder(name: str) -> Path:
    """The committed folder of a lab model (``lab-target``, ``target``, ...)."""
    return LAB_DIR / FOLDERS.get(name, name)


# -- tokenizer ---------------------------------------------------------------

def train_tokenizer(texts: Iterable[str], vocab_size: int = 512):
    """Byte-level BPE with one token per digit; returns a PreTrainedTokenizerFast."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=EOS, eos_token=EOS, pad_token=EOS, unk_token=EOS,
        model_max_length=1024, clean_up_tokenization_spaces=False,
    )


def tokenizer_corpus(seed: int, n: int = 6000) -> list[str]:
    """Text the tokenizer is trained on: every task's template family."""
    items = (synthetic.arithmetic(n, seed=seed) + synthetic.json_extraction(n, seed=seed)
             + synthetic.conflict(1500, seed=seed))
    return [it["prompt"] + it["answer"] for it in items]


# -- model configurations ----------------------------------------------------

@dataclass(frozen=True)
class Arch:
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    num_kv_heads: int | None = None

    def config(self, vocab_size: int, eos_id: int):
        from transformers import LlamaConfig

        return LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads,
            num_key_value_heads=self.num_kv_heads or self.num_heads,
            max_position_embeddings=1024,
            rms_norm_eps=1e-6,
            initializer_range=0.02,
            tie_word_embeddings=True,
            bos_token_id=eos_id,
            eos_token_id=eos_id,
            pad_token_id=eos_id,
            dtype="float32",
        )


# ~1.07 M parameters: two float32 copies (target, target-early) plus the draft fit in
# 10 MB without rounding the weights (see lab_pair/README.md).
TARGET_ARCH = Arch(hidden_size=144, num_layers=4, num_heads=4, intermediate_size=384)
DRAFT_ARCH = Arch(hidden_size=96, num_layers=2, num_heads=3, intermediate_size=256)


def new_model(arch: Arch, tokenizer, seed: int):
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    model = LlamaForCausalLM(arch.config(len(tokenizer), tokenizer.eos_token_id))
    return model.to(torch.float32)


# -- training data -----------------------------------------------------------

def heldout_prompts() -> set[str]:
    """Prompts of every evaluation set; training data never contains them."""
    items = (synthetic.arithmetic(500, seed=synthetic.EVAL_SEED)
             + synthetic.json_extraction(500, seed=synthetic.EVAL_SEED)
             + synthetic.arithmetic(500, seed=SELECT_SEED)
             + synthetic.json_extraction(500, seed=SELECT_SEED))
    return {it["prompt"] for it in items}


SELECT_SEED = 7  # picks target-early; disjoint from the reported evaluation set


def training_items(n: int, seed: int, arithmetic_share: float = 0.7) -> list[dict]:
    """``n`` training items (70% arithmetic, 30% JSON), evaluation prompts removed."""
    rng = random.Random(f"lab-mix/{seed}")
    n_arith = round(n * arithmetic_share)
    items = (synthetic.arithmetic(n_arith, seed=seed)
             + synthetic.json_extraction(n - n_arith, seed=seed))
    rng.shuffle(items)
    banned = heldout_prompts()
    return [it for it in items if it["prompt"] not in banned]


def encode(tokenizer, items: Sequence[dict]) -> list[tuple[list[int], list[int]]]:
    """(input ids, labels) per item: prompt tokens are masked (-100), answer + EOS are not."""
    prompts = tokenizer([it["prompt"] for it in items], add_special_tokens=False)["input_ids"]
    answers = tokenizer([it["answer"] for it in items], add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    out = []
    for p, a in zip(prompts, answers):
        out.append((p + a + [eos], [-100] * len(p) + a + [eos]))
    return out


def pack(examples: Sequence[tuple[list[int], list[int]]], seq_len: int, pad_id: int,
         open_rows: int = 64):
    """Rows of ``seq_len`` tokens holding whole examples (never split across rows).

    First fit over a window of ``open_rows`` partly filled rows, in the given
    order, so rows are nearly full; each row is padded with ``pad_id`` and
    label -100. Examples attend to earlier examples of their row (plain causal
    attention), which the answer-only loss tolerates.
    """
    import torch

    rows: list[tuple[list[int], list[int]]] = []
    done: list[tuple[list[int], list[int]]] = []
    for x, y in examples:
        if len(x) > seq_len:
            continue
        for row in rows:
            if len(row[0]) + len(x) <= seq_len:
                row[0].extend(x)
                row[1].extend(y)
                break
        else:
            rows.append((list(x), list(y)))
            if len(rows) > open_rows:  # retire the fullest row
                fullest = max(range(len(rows)), key=lambda i: len(rows[i][0]))
                done.append(rows.pop(fullest))
    done.extend(rows)
    ids = [r[0] + [pad_id] * (seq_len - len(r[0])) for r in done]
    labels = [r[1] + [-100] * (seq_len - len(r[1])) for r in done]
    return torch.tensor(ids), torch.tensor(labels)


# -- training loop -----------------------------------------------------------

@dataclass
class TrainConfig:
    steps: int
    lr: float
    batch_size: int = 32
    seq_len: int = 128
    warmup: int = 100
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    seed: int = 0
    log_every: int = 50

    def lr_at(self, step: int) -> float:
        return warmup_cosine(step, self.steps, self.lr, self.warmup, self.min_lr_ratio)


def warmup_cosine(step: int, total: int, lr: float, warmup: int, min_lr_ratio: float) -> float:
    """The learning rate at ``step`` of ``total``: linear warm-up over ``warmup``
    steps, then a cosine decay to ``min_lr_ratio · lr``."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return lr * (min_lr_ratio + (1 - min_lr_ratio) * cosine)


def train(model, ids, labels, cfg: TrainConfig,
          on_step: Callable[[int, dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """AdamW + warmup/cosine over the packed rows (reshuffled each epoch)."""
    import torch

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=cfg.lr, betas=(0.9, 0.95), eps=1e-8)
    gen = torch.Generator().manual_seed(cfg.seed)
    order = torch.randperm(len(ids), generator=gen)
    cursor = 0
    model.train()
    start = time.perf_counter()
    cpu_start = time.process_time()
    tokens = supervised = 0
    history = []
    window = []
    for step in range(cfg.steps):
        if cursor + cfg.batch_size > len(order):
            order = torch.randperm(len(ids), generator=gen)
            cursor = 0
        idx = order[cursor:cursor + cfg.batch_size]
        cursor += cfg.batch_size
        x, y = ids[idx], labels[idx]
        for group in opt.param_groups:
            group["lr"] = cfg.lr_at(step)
        loss = model(input_ids=x, labels=y).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        tokens += x.numel()
        supervised += int((y[:, 1:] != -100).sum())
        window.append(float(loss.detach()))
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            elapsed = time.perf_counter() - start
            record = {"step": step + 1, "loss": sum(window) / len(window),
                      "lr": cfg.lr_at(step), "tokens": tokens, "seconds": round(elapsed, 1),
                      "tok_per_s": round(tokens / elapsed)}
            history.append(record)
            window = []
            print(json.dumps(record), flush=True)
        if on_step is not None:
            on_step(step + 1, {"tokens": tokens})
    model.eval()
    elapsed = time.perf_counter() - start
    return {"steps": cfg.steps, "tokens": tokens, "supervised_tokens": supervised,
            "seconds": round(elapsed, 1),
            "cpu_seconds": round(time.process_time() - cpu_start, 1),
            "final_loss": history[-1]["loss"],
            "config": asdict(cfg), "history": history}


# -- generation and evaluation -------------------------------------------------

def greedy(model, tokenizer, prompts: Sequence[str], max_new_tokens: int = MAX_NEW_TOKENS,
           batch_size: int = 100) -> list[list[int]]:
    """Greedy continuations (token ids, EOS excluded), batched with left padding."""
    import torch

    eos = tokenizer.eos_token_id
    outs: list[list[int]] = []
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        for i in range(0, len(prompts), batch_size):
            enc = tokenizer(list(prompts[i:i + batch_size]), return_tensors="pt", padding=True,
                            add_special_tokens=False)
            with torch.no_grad():
                gen = model.generate(**enc, do_sample=False, max_new_tokens=max_new_tokens,
                                     eos_token_id=eos, pad_token_id=eos)
            for row in gen[:, enc["input_ids"].shape[1]:].tolist():
                outs.append(row[:row.index(eos)] if eos in row else row)
    finally:
        tokenizer.padding_side = side
    return outs


def accuracy(model, tokenizer, items: Sequence[dict], **kw) -> tuple[float, list[str]]:
    texts = [tokenizer.decode(o) for o in greedy(model, tokenizer,
                                                 [it["prompt"] for it in items], **kw)]
    ok = [synthetic.check(it["task"], t, it) for it, t in zip(items, texts)]
    return sum(ok) / len(ok), texts


def token_agreement(draft, target, tokenizer, prompts: Sequence[str],
                    max_new_tokens: int = MAX_NEW_TOKENS) -> float:
    """Share of the target's greedy tokens that the draft's argmax also picks, when the
    draft is fed the target's continuation (the greedy acceptance rate, per token)."""
    import torch

    conts = greedy(target, tokenizer, prompts, max_new_tokens=max_new_tokens)
    eos = tokenizer.eos_token_id
    hits = total = 0
    for prompt, cont in zip(prompts, conts):
        p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        full = p + cont + [eos]  # the target's EOS is a token to agree on too
        with torch.no_grad():
            logits = draft(torch.tensor([full[:-1]])).logits[0]
        picks = logits[len(p) - 1:].argmax(-1).tolist()
        want = full[len(p):]
        hits += sum(a == b for a, b in zip(picks, want))
        total += len(want)
    return hits / total


def load(name: str, dtype=None):
    """(model, tokenizer) of a committed lab folder, in float32, in eval mode."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = folder(name)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype or torch.float32).eval()
    return model, tokenizer


def save(model, tokenizer, out: Path, weights_dtype: str, extra: dict[str, Any]) -> None:
    """An HF folder: config (float32 compute), safetensors in ``weights_dtype``, tokenizer."""
    import torch

    out.mkdir(parents=True, exist_ok=True)
    model.config.dtype = "float32"
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.eos_token_id
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[weights_dtype]
    copy.deepcopy(model).to(torch_dtype).save_pretrained(out, safe_serialization=True)
    config = json.loads((out / "config.json").read_text())
    config["dtype"] = "float32"  # computation dtype; the weights file may be bfloat16
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    tokenizer.save_pretrained(out)
    (out / "sglang_ilsi_lab.json").write_text(json.dumps(
        {"weights_dtype": weights_dtype, **extra}, indent=2) + "\n")
