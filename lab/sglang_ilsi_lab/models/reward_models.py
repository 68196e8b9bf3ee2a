"""Reward models for the lab arithmetic task: ``lab-prm`` (process) and ``lab-orm`` (outcome).

Both judge solutions written by the policy ``lab-target-early`` (see
:mod:`sglang_ilsi_lab.models.lab`) to the arithmetic problems of
:mod:`sglang_ilsi_lab.data.synthetic`, and are committed as Hugging Face folders next to
the lab pair (``lab_pair/prm`` and ``lab_pair/orm``). ``scripts/train_reward_models.py``
runs the recipe below; this module also holds the scoring helpers tests use.

On-disk format (a contract the server's reward scoring relies on):

- ``lab_pair/prm``: ``LlamaForTokenClassification`` with ``num_labels=1``;
- ``lab_pair/orm``: ``LlamaForSequenceClassification`` with ``num_labels=1`` and
  ``pad_token_id=0``;
- each with the policy's tokenizer files and :data:`REWARD_FILE`
  (``sglang_ilsi_reward.json``): ``{"kind": "process" | "outcome", "step_delimiter": "\\n",
  "policy": "lab-target-early", "name": ..., "seed": ..., "metrics": {...}}``.

Scoring convention (training and evaluation here use exactly it):

- a solution (the text after the prompt) is split into *steps* after each
  occurrence of the delimiter ``"\\n"``; each step keeps its delimiter, the last
  one may have none: ``" 23+45=68\\n68-12=56\\n#### 56"`` gives
  ``[" 23+45=68\\n", "68-12=56\\n", "#### 56"]`` (:func:`split_steps`);
- input ids are the prompt's tokens followed by each step's tokens, every piece
  tokenised on its own (``add_special_tokens=False``), no BOS, no EOS (:func:`encode`);
- a token's logit is ``model.score(model.model(ids).last_hidden_state)[..., 0]`` and its
  score the sigmoid of it (:func:`logits`);
- PRM: step k's score is read at the last token of step k. Its label is 1 iff steps
  1..k all equal the reference steps (the item's ``answer`` split the same way):
  the solution is still on track (:func:`step_labels`);
- ORM: the score is read at the last token of the whole input; the label is 1 iff
  ``synthetic.check`` accepts the solution (:func:`outcome_label`).

Recipe: solutions are sampled from the policy (temperature 1, no top-k/top-p, at most
64 new tokens) on training problems of a seed no evaluation or selection set uses
(evaluation prompts removed), several per problem; both models start from the
policy's body (``model.*`` weights) with a new ``score`` head and are trained with
binary cross-entropy (PRM on every step end, ORM on the last token) with AdamW. A
tenth of the training problems is kept apart to pick the best epoch; the reported
figures are on samples of the evaluation problems (``synthetic.arithmetic(400,
seed=1)``), drawn with another sampling seed.

What the committed models learned (``lab_pair/README.md``): their pooled AUROC is well
above chance, but they mostly rate how hard a problem is for the policy and hardly check
the arithmetic — a reference solution and the same solution with a slip get about the same
score (:func:`contrast`), and best-of-N by their scores is no better than the first sample.
The policy's own token log-probabilities (:func:`policy_logprob_scores`), with no training,
separate right from wrong much better.
"""

from __future__ import annotations

import json
import math
import random
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sglang_ilsi.reward import split_steps as served_split_steps
from sglang_ilsi_lab.data import synthetic
from sglang_ilsi_lab.models import lab

DELIMITER = "\n"
POLICY = "lab-target-early"
REWARD_FILE = "sglang_ilsi_reward.json"
KINDS = {"process": ("lab-prm", "prm"), "outcome": ("lab-orm", "orm")}  # kind -> name, folder
TRAIN_PROBLEM_SEED = 11  # not EVAL_SEED (1), TEXT_SEED (2) nor lab.SELECT_SEED (7)
EVAL_PROBLEMS = 400


# -- the scoring convention ----------------------------------------------------

def split_steps(solution: str, delimiter: str = DELIMITER) -> list[str]:
    """``solution`` cut after each ``delimiter``; every step keeps its delimiter, the last
    one may have none; no empty step (``""`` has no step). The server's own cut
    (:func:`sglang_ilsi.reward.split_steps`), so training reads what serving reads."""
    return served_split_steps(solution, delimiter)


def step_labels(solution: str, item: dict, delimiter: str = DELIMITER) -> list[int]:
    """Per step: 1 iff this step and every step before it equal the reference's."""
    reference = split_steps(item["answer"], delimiter)
    labels: list[int] = []
    on_track = True
    for k, step in enumerate(split_steps(solution, delimiter)):
        on_track = on_track and k < len(reference) and step == reference[k]
        labels.append(int(on_track))
    return labels


def outcome_label(solution: str, item: dict) -> int:
    """1 iff the final answer is right (``synthetic.check``)."""
    return int(synthetic.check(item.get("task", "arithmetic"), solution, item))


def encode(tokenizer, prompt: str, steps: Sequence[str],
           cache: dict[str, list[int]] | None = None) -> tuple[list[int], list[int]]:
    """(input ids, index of each step's last token): prompt and steps tokenised one by
    one without special tokens, then concatenated."""

    def tokens(text: str) -> list[int]:
        if cache is None:
            return list(tokenizer(text, add_special_tokens=False)["input_ids"])
        if text not in cache:
            cache[text] = list(tokenizer(text, add_special_tokens=False)["input_ids"])
        return cache[text]

    ids = list(tokens(prompt))
    ends: list[int] = []
    for step in steps:
        piece = tokens(step)
        if not piece:
            raise ValueError(f"step {step!r} has no token")
        ids.extend(piece)
        ends.append(len(ids) - 1)
    return ids, ends


def logits(model, input_ids, attention_mask=None):
    """Per-token reward logits ``[batch, len]``: ``model.score(model.model(...))[..., 0]``."""
    hidden = model.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    return model.score(hidden)[..., 0]


def score_solution(model, tokenizer, prompt: str, solution: str, kind: str) -> list[float]:
    """Scores (sigmoid) of one solution by the convention: one per step for a process
    model, a single one (the last token's) for an outcome model."""
    import torch

    ids, ends = encode(tokenizer, prompt, split_steps(solution))
    with torch.no_grad():
        probs = torch.sigmoid(logits(model, torch.tensor([ids])))[0]
    if kind == "process":
        return [float(probs[i]) for i in ends]
    return [float(probs[len(ids) - 1])]


# -- data ----------------------------------------------------------------------

@dataclass
class Sample:
    """One sampled solution, with its tokens and labels under the convention."""

    problem: int  # index of its problem in the list it was sampled on
    item: dict
    solution: str
    ids: list[int]
    ends: list[int]  # last token of each step
    steps: list[int]  # PRM labels
    correct: int  # ORM label
    prompt_len: int  # tokens of the prompt


def eval_problems(n: int = EVAL_PROBLEMS) -> list[dict]:
    return synthetic.arithmetic(n, seed=synthetic.EVAL_SEED)


def training_problems(n: int, seed: int = TRAIN_PROBLEM_SEED) -> list[dict]:
    """``n`` arithmetic problems of ``seed``, minus any whose prompt is held out."""
    if seed in (synthetic.EVAL_SEED, synthetic.TEXT_SEED, lab.SELECT_SEED):
        raise ValueError(f"seed {seed} is an evaluation/selection seed")
    banned = lab.heldout_prompts() | {it["prompt"] for it in eval_problems()}
    return [it for it in synthetic.arithmetic(n, seed=seed) if it["prompt"] not in banned]


def sample_solutions(model, tokenizer, items: Sequence[dict], per_problem: int, seed: int,
                     batch_problems: int = 64,
                     max_new_tokens: int = lab.MAX_NEW_TOKENS) -> list[list[str]]:
    """``per_problem`` solutions per item: ancestral sampling (temperature 1, top_k 0,
    top_p 1), batched with left padding, text cut at EOS. Batch ``b`` is seeded with
    ``seed * 100003 + b``, so a batch's draws do not depend on the batches before it."""
    import torch

    eos = tokenizer.eos_token_id
    out: list[list[str]] = []
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        for b, start in enumerate(range(0, len(items), batch_problems)):
            chunk = items[start:start + batch_problems]
            prompts = [it["prompt"] for it in chunk for _ in range(per_problem)]
            enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
            torch.manual_seed(seed * 100003 + b)
            with torch.no_grad():
                gen = model.generate(**enc, do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                                     max_new_tokens=max_new_tokens, eos_token_id=eos,
                                     pad_token_id=eos)
            rows = gen[:, enc["input_ids"].shape[1]:].tolist()
            texts = [tokenizer.decode(r[:r.index(eos)] if eos in r else r) for r in rows]
            out.extend(texts[i:i + per_problem] for i in range(0, len(texts), per_problem))
    finally:
        tokenizer.padding_side = side
    return out


def build_samples(tokenizer, items: Sequence[dict],
                  solutions: Sequence[Sequence[str]]) -> list[Sample]:
    cache: dict[str, list[int]] = {}
    samples = []
    for p, (item, texts) in enumerate(zip(items, solutions, strict=True)):
        for text in texts:
            ids, ends = encode(tokenizer, item["prompt"], split_steps(text), cache)
            samples.append(Sample(p, item, text, ids, ends, step_labels(text, item),
                                  outcome_label(text, item), len(cache[item["prompt"]])))
    return samples


def label_rates(samples: Sequence[Sample]) -> dict[str, Any]:
    steps = [y for s in samples for y in s.steps]
    return {"solutions": len(samples),
            "correct_final": round(sum(s.correct for s in samples) / len(samples), 4),
            "steps": len(steps),
            "steps_on_track": round(sum(steps) / max(1, len(steps)), 4),
            "all_steps_on_track": round(
                sum(bool(s.steps) and all(s.steps) for s in samples) / len(samples), 4),
            "mean_steps": round(len(steps) / len(samples), 3),
            "no_step": sum(not s.steps for s in samples)}


# -- models --------------------------------------------------------------------

def new_reward_model(kind: str, policy_dir: Path, seed: int):
    """A classification model whose body is the policy's (``model.*`` weights) with a new
    ``score`` head: token classification for ``process``, sequence for ``outcome``."""
    import torch
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        LlamaForSequenceClassification,
        LlamaForTokenClassification,
    )

    config = AutoConfig.from_pretrained(policy_dir)
    config.num_labels = 1
    config.pad_token_id = 0
    config.architectures = None
    config.tie_word_embeddings = False  # no output embeddings: a score head instead
    config.dtype = "float32"
    torch.manual_seed(seed)
    cls = LlamaForTokenClassification if kind == "process" else LlamaForSequenceClassification
    model = cls(config).to(torch.float32)
    policy = AutoModelForCausalLM.from_pretrained(policy_dir, dtype=torch.float32)
    missing, unexpected = model.model.load_state_dict(policy.model.state_dict(), strict=True)
    assert not missing and not unexpected
    return model


def _batch(samples: Sequence[Sample], kind: str):
    """Right-padded ids (pad 0), attention mask, label targets and their mask (1 at the
    positions the convention reads: step ends, or the last token)."""
    import torch

    width = max(len(s.ids) for s in samples)
    ids = torch.zeros(len(samples), width, dtype=torch.long)
    attention = torch.zeros(len(samples), width, dtype=torch.long)
    targets = torch.zeros(len(samples), width)
    weight = torch.zeros(len(samples), width)
    for r, s in enumerate(samples):
        ids[r, :len(s.ids)] = torch.tensor(s.ids)
        attention[r, :len(s.ids)] = 1
        if kind == "process":
            for pos, y in zip(s.ends, s.steps):
                targets[r, pos] = y
                weight[r, pos] = 1
        else:
            targets[r, len(s.ids) - 1] = s.correct
            weight[r, len(s.ids) - 1] = 1
    return ids, attention, targets, weight


def predict(model, samples: Sequence[Sample], kind: str,
            batch_size: int = 256) -> list[list[float]]:
    """Per sample: the step-end scores (process) or ``[last-token score]`` (outcome)."""
    import torch

    model.eval()
    out: list[list[float]] = []
    with torch.no_grad():
        for i in range(0, len(samples), batch_size):
            chunk = samples[i:i + batch_size]
            ids, attention, _, _ = _batch(chunk, kind)
            probs = torch.sigmoid(logits(model, ids, attention)).tolist()
            for s, row in zip(chunk, probs):
                out.append([row[e] for e in s.ends] if kind == "process"
                           else [row[len(s.ids) - 1]])
    return out


@dataclass
class TrainConfig:
    epochs: int = 3
    lr: float = 1e-3
    batch_size: int = 64
    warmup: int = 30
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    seed: int = 0
    log_every: int = 50


def bce(model, samples: Sequence[Sample], kind: str, batch_size: int = 256) -> float:
    import torch

    total = count = 0.0
    model.eval()
    with torch.no_grad():
        for i in range(0, len(samples), batch_size):
            ids, attention, targets, weight = _batch(samples[i:i + batch_size], kind)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                logits(model, ids, attention), targets, weight=weight, reduction="sum")
            total += float(loss)
            count += float(weight.sum())
    return total / max(count, 1.0)


def train(model, kind: str, train_set: Sequence[Sample], val_set: Sequence[Sample],
          cfg: TrainConfig) -> dict[str, Any]:
    """AdamW + warmup/cosine, BCE-with-logits on the labelled positions; the state of the
    epoch with the lowest validation loss is kept (loaded into ``model``)."""
    import copy

    import torch

    torch.manual_seed(cfg.seed)
    decay = [p for _, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for _, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    per_epoch = math.ceil(len(train_set) / cfg.batch_size)
    total = per_epoch * cfg.epochs

    def lr_at(step: int) -> float:
        return lab.warmup_cosine(step, total, cfg.lr, cfg.warmup, cfg.min_lr_ratio)

    rng = random.Random(f"reward/{kind}/{cfg.seed}")
    start, cpu_start = time.perf_counter(), time.process_time()
    history: list[dict[str, Any]] = []
    epochs: list[dict[str, Any]] = []
    best: tuple[float, int, dict] | None = None
    step, window = 0, []
    for epoch in range(cfg.epochs):
        order = list(range(len(train_set)))
        rng.shuffle(order)
        model.train()
        for i in range(0, len(order), cfg.batch_size):
            ids, attention, targets, weight = _batch([train_set[j] for j in
                                                      order[i:i + cfg.batch_size]], kind)
            for group in opt.param_groups:
                group["lr"] = lr_at(step)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                logits(model, ids, attention), targets, weight=weight,
                reduction="sum") / weight.sum().clamp(min=1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            window.append(float(loss.detach()))
            step += 1
            if step % cfg.log_every == 0:
                record = {"step": step, "loss": round(sum(window) / len(window), 4),
                          "lr": lr_at(step - 1),
                          "seconds": round(time.perf_counter() - start, 1)}
                history.append(record)
                window = []
                print(json.dumps({kind: record}), flush=True)
        val = bce(model, val_set, kind)
        epochs.append({"epoch": epoch + 1, "val_bce": round(val, 4)})
        print(json.dumps({kind: epochs[-1]}), flush=True)
        if best is None or val < best[0]:
            best = (val, epoch + 1, copy.deepcopy(model.state_dict()))
    assert best is not None
    model.load_state_dict(best[2])
    model.eval()
    return {"steps": step, "epochs": epochs, "best_epoch": best[1],
            "seconds": round(time.perf_counter() - start, 1),
            "cpu_seconds": round(time.process_time() - cpu_start, 1),
            "config": asdict(cfg), "history": history}


# -- evaluation ----------------------------------------------------------------

def auroc(scores: Sequence[float], labels: Sequence[int]) -> float | None:
    """Area under the ROC curve (Mann-Whitney rank statistic, ties count one half);
    None when one class is missing."""
    pairs = sorted(zip(scores, labels))
    pos = sum(1 for _, y in pairs if y)
    neg = len(pairs) - pos
    if pos == 0 or neg == 0:
        return None
    rank_sum = 0.0
    i = 0
    while i < len(pairs):
        j = i
        while j < len(pairs) and pairs[j][0] == pairs[i][0]:
            j += 1
        mid_rank = (i + 1 + j) / 2  # ranks i+1..j share their mean
        rank_sum += mid_rank * sum(1 for _, y in pairs[i:j] if y)
        i = j
    return (rank_sum - pos * (pos + 1) / 2) / (pos * neg)


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


def process_metrics(samples: Sequence[Sample], scores: Sequence[Sequence[float]]) -> dict:
    step_scores = [p for ps in scores for p in ps]
    step_y = [y for s in samples for y in s.steps]
    final_y = [s.correct for s in samples]
    last = [ps[-1] if ps else 0.0 for ps in scores]
    low = [min(ps) if ps else 0.0 for ps in scores]
    return {
        "step_accuracy": _r(sum((p >= 0.5) == bool(y) for p, y in zip(step_scores, step_y))
                            / len(step_y)),
        "step_auroc": _r(auroc(step_scores, step_y)),
        "last_step_auroc_final_correct": _r(auroc(last, final_y)),
        "min_step_auroc_final_correct": _r(auroc(low, final_y)),
        "last_step_accuracy_final_correct": _r(
            sum((p >= 0.5) == bool(y) for p, y in zip(last, final_y)) / len(final_y)),
        "steps": len(step_y), "step_positive_rate": _r(sum(step_y) / len(step_y)),
    }


def outcome_metrics(samples: Sequence[Sample], scores: Sequence[Sequence[float]]) -> dict:
    final = [ps[0] for ps in scores]
    y = [s.correct for s in samples]
    return {"accuracy": _r(sum((p >= 0.5) == bool(t) for p, t in zip(final, y)) / len(y)),
            "auroc": _r(auroc(final, y)), "solutions": len(y),
            "positive_rate": _r(sum(y) / len(y))}


def policy_logprob_scores(policy, samples: Sequence[Sample],
                          batch_size: int = 256) -> list[list[float]]:
    """A training-free baseline: per step, the lowest log-probability the policy gave to
    any solution token so far (a running minimum, read at each step end)."""
    import torch

    out: list[list[float]] = []
    with torch.no_grad():
        for i in range(0, len(samples), batch_size):
            chunk = samples[i:i + batch_size]
            ids, attention, _, _ = _batch(chunk, "process")
            logp = torch.log_softmax(policy(input_ids=ids, attention_mask=attention).logits, -1)
            written = logp[:, :-1].gather(-1, ids[:, 1:, None])[..., 0].tolist()
            for s, row in zip(chunk, written):
                low, scores, first = 0.0, [], s.prompt_len
                for end in s.ends:
                    low = min([low, *row[first - 1:end]])  # row[t - 1]: token t
                    scores.append(low)
                    first = end + 1
                out.append(scores)
    return out


def best_of_n(samples: Sequence[Sample], choosers: dict[str, Sequence[float]]) -> dict:
    """Accuracy per problem when one of its samples is picked by each chooser's score
    (first maximum), next to the first sample's accuracy, pass@n and majority vote."""
    by_problem: dict[int, list[int]] = {}
    for i, s in enumerate(samples):
        by_problem.setdefault(s.problem, []).append(i)
    n = len(by_problem)
    out: dict[str, Any] = {"problems": n,
                           "samples_per_problem": round(len(samples) / n, 3),
                           "first_sample": sum(samples[ix[0]].correct
                                               for ix in by_problem.values()) / n,
                           "oracle_any_correct": sum(any(samples[i].correct for i in ix)
                                                     for ix in by_problem.values()) / n}
    votes = 0
    for ix in by_problem.values():
        answers = [synthetic.extract_number(samples[i].solution) for i in ix]
        counts: dict[float, int] = {}
        for a in answers:
            if a is not None:
                counts[a] = counts.get(a, 0) + 1
        if counts:
            top = max(counts.values())
            pick = next(a for a in answers if a is not None and counts[a] == top)
            votes += pick == samples[ix[0]].item["result"]
    out["majority_vote"] = votes / n
    for name, score in choosers.items():
        out[name] = sum(samples[max(ix, key=lambda i: score[i])].correct
                        for ix in by_problem.values()) / n
    return {k: _r(v) if isinstance(v, float) else v for k, v in out.items()}


def wrong_first_step(item: dict, delta: int = 1) -> str:
    """The reference solution with its first result off by ``delta``, the later steps
    carried on correctly from the wrong value (as the policy does after a slip)."""
    value: int | None = None
    out = []
    for step in split_steps(item["answer"])[:-1]:
        m = re.fullmatch(r" ?(-?\d+)([+-])(\d+)=(-?\d+)\n", step)
        if m is None:
            raise ValueError(f"not a worked step: {step!r}")
        a = int(m.group(1)) if value is None else value
        op, b = m.group(2), int(m.group(3))
        value = (a + b if op == "+" else a - b) + (delta if not out else 0)
        out.append(f"{a}{op}{b}={value}")
    return " " + "\n".join(out) + f"\n#### {value}"


def contrast(model, tokenizer, kind: str, items: Sequence[dict],
             deltas: Sequence[int] = (1, 10)) -> dict[str, float]:
    """Share of ``items`` where the reference solution scores above the same solution with
    its first result off by ``delta`` (process: first-step and last-step scores; outcome:
    the score): a direct check that the model verifies the arithmetic."""
    out: dict[str, float] = {}
    for delta in deltas:
        first = last = 0
        for item in items:
            good = score_solution(model, tokenizer, item["prompt"], item["answer"], kind)
            bad = score_solution(model, tokenizer, item["prompt"],
                                 wrong_first_step(item, delta), kind)
            first += good[0] > bad[0]
            last += good[-1] > bad[-1]
        if kind == "process":
            out[f"first_step_off_by_{delta}"] = round(first / len(items), 4)
        out[f"{'last_step_' if kind == 'process' else ''}off_by_{delta}"] = round(
            last / len(items), 4)
    return out


# -- folders -------------------------------------------------------------------

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def save(model, policy_dir: Path, out: Path) -> None:
    """An HF folder: float32 safetensors, config and the policy's tokenizer files, copied
    byte for byte (the :data:`REWARD_FILE` comes with :func:`write_info`)."""
    import shutil

    out.mkdir(parents=True, exist_ok=True)
    model.config.dtype = "float32"
    model.save_pretrained(out, safe_serialization=True)
    config = json.loads((out / "config.json").read_text())
    config["dtype"] = "float32"
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    for name in TOKENIZER_FILES:
        if (policy_dir / name).is_file():
            shutil.copyfile(policy_dir / name, out / name)


def write_info(out: Path, kind: str, seed: int, metrics: dict) -> None:
    """The folder's :data:`REWARD_FILE`."""
    name, _ = KINDS[kind]
    (out / REWARD_FILE).write_text(json.dumps(
        {"kind": kind, "step_delimiter": DELIMITER, "policy": POLICY, "name": name,
         "seed": seed, "metrics": metrics}, indent=2) + "\n")


def load(kind_or_name: str):
    """(model, tokenizer, reward info) of a committed reward folder (``process``,
    ``lab-prm``, ``prm``, ...), float32, eval mode."""
    import torch
    from transformers import (
        AutoTokenizer,
        LlamaForSequenceClassification,
        LlamaForTokenClassification,
    )

    sub = {k: f for k, (_, f) in KINDS.items()} | {n: f for n, f in KINDS.values()}
    path = lab.LAB_DIR / sub.get(kind_or_name, kind_or_name)
    info = json.loads((path / REWARD_FILE).read_text())
    cls = (LlamaForTokenClassification if info["kind"] == "process"
           else LlamaForSequenceClassification)
    model = cls.from_pretrained(path, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(path), info
