"""``smollm2-json-orm``: an outcome reward model for SmolLM2-135M-Instruct on JSON extraction.

A *linear probe* on the frozen policy: SmolLM2's own body (its 30 decoder
layers and final norm) reads ``prompt + solution`` and one trained vector
``w`` (Llama's classification head, ``score = Linear(576, 1, bias=False)``)
turns the last token's hidden state into the probability that the solution is
right. Only ``w`` is committed (``smollm2_json_orm/score.safetensors``, 2 KiB,
with ``metrics.json``); :func:`build` derives the served folder at prepare time
(catalog entry ``smollm2-json-orm``), like ``smollm2-amateur``.

Served folder (the server's reward-model format, :mod:`sglang_ilsi.reward`):
an HF ``LlamaForSequenceClassification`` with ``num_labels = 1`` and
``pad_token_id`` set, the base model's ``model.*`` weights, ``score.weight = w``,
the tokenizer, and ``sglang_ilsi_reward.json`` = ``{"kind": "outcome",
"step_delimiter": "\\n", "name": "smollm2-json-orm", "policy":
"smollm2-135m-instruct", "metrics": {...}}``.

Scoring convention (features here follow it exactly): the prompt is the
chat-templated text the policy saw (``apply_chat_template(..., tokenize=False,
add_generation_prompt=True)`` of the bench's ``JSON_INSTRUCTION``); the
solution is split after each ``"\\n"`` (:func:`sglang_ilsi.reward.split_steps`);
input ids are ``tok(prompt) + tok(step_1) + ...``, each piece tokenised alone
without special tokens; the score is ``sigmoid(score(model(ids).last_hidden_state))``
at the last token.

Recipe (:func:`train`, ``scripts/train_smollm2_json_orm.py``):

1. **Solutions**: :data:`SAMPLES` solutions per problem to the chat-templated
   prompt (temperature :data:`TEMPERATURE`, no top-k/top-p, at most
   :data:`MAX_NEW_TOKENS` new tokens) for :data:`TRAIN_PROBLEMS` training problems
   of ``synthetic.json_extraction(seed=TRAIN_PROBLEM_SEED)`` (any sentence that is
   also a held-out one removed) and :data:`HELDOUT_PROBLEMS` held-out problems of
   ``seed=EVAL_SEED`` (1). Label = :func:`right_up_to_case`: the answer parses
   as a JSON object with exactly the four fields and their values, strings
   compared after case-folding (``synthetic.check`` compares exactly). Sampler:
   ``"server"`` posts batches to ``/generate`` of an SGLang server on the
   converted folder (``sampling_seed`` per request); ``"transformers"``
   (:func:`sample_solutions_hf`, what the committed head used) samples the same
   model in-process. On the shared 2-core CPU the server's first decode of a
   64-request batch ran for over 8 minutes (torch-native attention loops per
   request), so the committed run sampled in transformers.
   The policy almost always capitalises the job ("Nurse" for "nurse"): under
   ``check``'s exact comparison only 5 of 360 samples were right (at any
   temperature tried: 1.0: 0/64, 0.7: 1/64, 0.3: 1/48 on pilot prompts of seed
   99), too few to learn from; up to letter case, 96 of 360 are.
2. **Features**: the final-norm hidden state at the last token, from the body
   in transformers (float32, batched, right padding; the token prefix every
   input shares is run once and its KV cache reused).
3. **Head**: L2-regularised logistic regression without intercept, fitted with
   LBFGS in float64 on the features divided by their per-dimension RMS (the
   scale is folded back into ``w``; no centring, which would need an
   intercept). The L2 strength is chosen from :data:`L2_GRID` by log-loss on a
   validation split of the *training* problems (:data:`VAL_FRACTION`, by
   problem), then the head is refitted on all training samples.
4. **Metrics** on the held-out samples: accuracy at threshold 0.5, AUROC, the
   label rate, and best-of-2 accuracy (the sample the ORM scores higher) vs
   the first sample's accuracy and the oracle (either sample right).

Sampling on a CPU server is seeded but not bit-reproducible across machines
(batch composition changes float rounding), so a rerun gives a close, not
identical, head; the committed ``metrics.json`` records the run that made it.
"""

from __future__ import annotations

import json
import math
import random
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sglang_ilsi.reward import REWARD_FILE, split_steps
from sglang_ilsi_lab.data import synthetic

NAME = "smollm2-json-orm"
POLICY = "smollm2-135m-instruct"
DELIMITER = "\n"
HEAD_DIR = Path(__file__).resolve().parent / "smollm2_json_orm"
HEAD_FILE = "score.safetensors"
METRICS_FILE = "metrics.json"
HEAD_KEY = "score.weight"

TRAIN_PROBLEM_SEED = 11  # not EVAL_SEED (1) nor TEXT_SEED (2)
TRAIN_PROBLEMS = 120
HELDOUT_PROBLEMS = 60
SAMPLES = 2
TEMPERATURE = 0.3
MAX_NEW_TOKENS = 60
SAMPLING_SEED = 1234
L2_GRID = (1e-4, 1e-3, 1e-2, 3e-2, 1e-1, 3e-1)
VAL_FRACTION = 0.2
SEED = 0
FEATURE_BATCH = 32

Log = Callable[[str], None]


# -- prompts and problems ---------------------------------------------------------



def _folded(record: dict[str, Any]) -> dict[str, Any]:
    return {str(k): v.casefold() if isinstance(v, str) else v for k, v in record.items()}


def right_up_to_case(text: str, item: dict[str, Any]) -> bool:
    """The answer is the item's record (the four fields, their values), strings
    compared after case-folding; anything unparsable is wrong."""
    try:
        got = synthetic.extract_json(text)
    except ValueError:
        return False
    want = json.loads(item["answer"]) if isinstance(item["answer"], str) else item["answer"]
    return isinstance(got, dict) and _folded(got) == _folded(want)

def instruction(item: dict[str, Any]) -> str:
    """The bench's chat instruction for a JSON extraction item."""
    from sglang_ilsi_lab.bench.specs.core_tasks import JSON_INSTRUCTION

    return JSON_INSTRUCTION.format(sentence=item["sentence"])


def chat_prompt(tokenizer: Any, item: dict[str, Any]) -> str:
    """The exact prompt text the policy sees (chat template, generation prompt added)."""
    text = tokenizer.apply_chat_template([{"role": "user", "content": instruction(item)}],
                                         tokenize=False, add_generation_prompt=True)
    return str(text)


def heldout_problems(n: int = HELDOUT_PROBLEMS) -> list[dict[str, Any]]:
    return synthetic.json_extraction(n, seed=synthetic.EVAL_SEED)


def training_problems(n: int = TRAIN_PROBLEMS, seed: int = TRAIN_PROBLEM_SEED,
                      heldout: int = HELDOUT_PROBLEMS) -> list[dict[str, Any]]:
    """``n`` problems of ``seed`` minus any whose sentence is held out (or repeated)."""
    if seed in (synthetic.EVAL_SEED, synthetic.TEXT_SEED):
        raise ValueError(f"seed {seed} is an evaluation seed")
    seen = {it["sentence"] for it in heldout_problems(max(heldout, 400))}
    out = []
    for it in synthetic.json_extraction(n, seed=seed):
        if it["sentence"] not in seen:
            seen.add(it["sentence"])
            out.append(it)
    return out


# -- sampling on a server -----------------------------------------------------------


def _post(url: str, body: dict[str, Any], timeout: float = 1800.0) -> Any:
    request = urllib.request.Request(url, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def sample_solutions(base_url: str, prompts: Sequence[str], samples: int, *,
                     temperature: float = TEMPERATURE, max_new_tokens: int = MAX_NEW_TOKENS,
                     seed: int = SAMPLING_SEED, batch: int = 64,
                     log: Log = print) -> list[list[str]]:
    """``samples`` solutions per prompt from ``/generate`` (batched as lists); request
    ``k`` (prompt-major order) gets ``sampling_seed = seed + k``."""
    texts = [p for p in prompts for _ in range(samples)]
    out: list[str] = []
    for start in range(0, len(texts), batch):
        chunk = texts[start:start + batch]
        params = [{"temperature": temperature, "max_new_tokens": max_new_tokens,
                   "sampling_seed": seed + start + k} for k in range(len(chunk))]
        result = _post(base_url.rstrip("/") + "/generate",
                       {"text": chunk, "sampling_params": params})
        out.extend(r["text"] for r in result)
        log(f"[json-orm] sampled {len(out)}/{len(texts)}")
    return [out[i:i + samples] for i in range(0, len(out), samples)]


def sample_solutions_hf(model: Any, tokenizer: Any, prompts: Sequence[str], samples: int, *,
                        temperature: float = TEMPERATURE, max_new_tokens: int = MAX_NEW_TOKENS,
                        seed: int = SAMPLING_SEED, batch: int = 48,
                        log: Log = print) -> list[list[str]]:
    """The same sampling in transformers (pure temperature sampling, no top-k/top-p,
    left padding, text cut at EOS); batch ``b`` is seeded with ``seed + b``. Used when
    the CPU server is too slow (see the module docstring)."""
    import torch

    eos = tokenizer.eos_token_id
    texts = [p for p in prompts for _ in range(samples)]
    out: list[str] = []
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        for b, start in enumerate(range(0, len(texts), batch)):
            enc = tokenizer(texts[start:start + batch], return_tensors="pt", padding=True,
                            add_special_tokens=False)
            torch.manual_seed(seed + b)
            with torch.inference_mode():
                gen = model.generate(**enc, do_sample=True, temperature=temperature, top_k=0,
                                     top_p=1.0, max_new_tokens=max_new_tokens,
                                     eos_token_id=eos, pad_token_id=eos)
            for row in gen[:, enc["input_ids"].shape[1]:].tolist():
                out.append(tokenizer.decode(row[:row.index(eos)] if eos in row else row,
                                            skip_special_tokens=True))
            log(f"[json-orm] sampled {len(out)}/{len(texts)}")
    finally:
        tokenizer.padding_side = side
    return [out[i:i + samples] for i in range(0, len(out), samples)]


# -- features ----------------------------------------------------------------------


def encode(tokenizer: Any, prompt: str, solution: str) -> list[int]:
    """Input ids by the convention: prompt and each step tokenised alone, concatenated."""
    ids = list(tokenizer.encode(prompt, add_special_tokens=False))
    for step in split_steps(solution, DELIMITER):
        ids += list(tokenizer.encode(step, add_special_tokens=False))
    return ids


def features(body: Any, sequences: Sequence[list[int]], batch: int = FEATURE_BATCH,
             log: Log = print) -> Any:
    """Final-norm hidden state at each sequence's last token, ``[N, hidden]`` float32.

    The longest token prefix all sequences share (minus one token) is run once
    and its KV cache is repeated for each batch; the rest is right-padded.
    """
    import torch
    from transformers import DynamicCache

    if not sequences or min(len(s) for s in sequences) < 2:
        raise ValueError("every sequence needs at least two tokens")
    shared = min(len(s) for s in sequences) - 1
    first = sequences[0]
    for s in sequences[1:]:
        while shared and s[:shared] != first[:shared]:
            shared -= 1
    out = []
    with torch.inference_mode():
        prefix_cache = None
        if shared:
            prefix_cache = body(input_ids=torch.tensor([first[:shared]]),
                                use_cache=True).past_key_values
        for start in range(0, len(sequences), batch):
            chunk = [s[shared:] for s in sequences[start:start + batch]]
            width = max(len(s) for s in chunk)
            ids = torch.zeros((len(chunk), width), dtype=torch.long)
            mask = torch.zeros((len(chunk), shared + width), dtype=torch.long)
            mask[:, :shared] = 1
            for row, s in enumerate(chunk):
                ids[row, :len(s)] = torch.tensor(s)
                mask[row, shared:shared + len(s)] = 1
            kwargs: dict[str, Any] = {}
            if prefix_cache is not None:
                cache = DynamicCache()
                for layer, (k, v) in enumerate(_layers(prefix_cache)):
                    cache.update(k.repeat(len(chunk), 1, 1, 1), v.repeat(len(chunk), 1, 1, 1),
                                 layer)
                kwargs = {"past_key_values": cache, "use_cache": True,
                          "position_ids": torch.arange(shared, shared + width).expand(
                              len(chunk), -1)}
            hidden = body(input_ids=ids, attention_mask=mask, **kwargs).last_hidden_state
            last = torch.tensor([len(s) - 1 for s in chunk])
            out.append(hidden[torch.arange(len(chunk)), last].float())
            if (start // batch) % 5 == 0:
                log(f"[json-orm] features {start + len(chunk)}/{len(sequences)}")
    return torch.cat(out)


def _layers(cache: Any) -> list[tuple[Any, Any]]:
    """(key, value) per layer of a transformers cache."""
    if hasattr(cache, "layers"):
        return [(layer.keys, layer.values) for layer in cache.layers]
    return [(cache.key_cache[i], cache.value_cache[i]) for i in range(len(cache.key_cache))]


# -- the head ------------------------------------------------------------------------


def fit_head(x: Any, y: Any, l2: float, seed: int = SEED, max_iter: int = 500) -> Any:
    """Weight ``w`` (float32, ``[hidden]``) minimising mean BCE(sigmoid(x @ w), y)
    + l2/2 |w * rms|^2 (L2 on the RMS-scaled features' weight), no intercept."""
    import torch

    torch.manual_seed(seed)
    xd = x.double()
    rms = xd.pow(2).mean(0).sqrt().clamp_min(1e-6)
    xs = xd / rms
    yd = y.double()
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w], lr=1.0, max_iter=max_iter, tolerance_grad=1e-9,
                            tolerance_change=1e-12, history_size=20,
                            line_search_fn="strong_wolfe")

    def closure() -> Any:
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(xs @ w, yd)
        loss = loss + 0.5 * l2 * w.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return (w.detach() / rms).float()


def probabilities(x: Any, w: Any) -> list[float]:
    import torch

    return [float(p) for p in torch.sigmoid(x.float() @ w.float())]


def log_loss(p: Sequence[float], y: Sequence[int]) -> float:
    eps = 1e-12
    return -sum(math.log(max(eps, q if t else 1 - q)) for q, t in zip(p, y)) / max(1, len(y))


def auroc(p: Sequence[float], y: Sequence[int]) -> float:
    """Area under the ROC curve (Mann-Whitney, ties count half); NaN with one class."""
    pos = [q for q, t in zip(p, y) if t]
    neg = [q for q, t in zip(p, y) if not t]
    if not pos or not neg:
        return math.nan
    order = sorted(range(len(p)), key=lambda i: p[i])
    ranks = [0.0] * len(p)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and p[order[j + 1]] == p[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    rank_sum = sum(r for r, t in zip(ranks, y) if t)
    return (rank_sum - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg))


def evaluate(p: Sequence[float], y: Sequence[int], samples: int = SAMPLES) -> dict[str, Any]:
    """Held-out figures; ``p``/``y`` are problem-major (``samples`` per problem)."""
    n = len(y)
    problems = n // samples
    best = first = oracle = 0
    for k in range(problems):
        ps, ys = p[k * samples:(k + 1) * samples], y[k * samples:(k + 1) * samples]
        pick = max(range(samples), key=lambda i: (ps[i], -i))
        best += ys[pick]
        first += ys[0]
        oracle += max(ys)
    return {
        "samples": n, "problems": problems, "label_rate": round(sum(y) / max(1, n), 4),
        "accuracy": round(sum((q >= 0.5) == bool(t) for q, t in zip(p, y)) / max(1, n), 4),
        "majority_baseline": round(max(sum(y), n - sum(y)) / max(1, n), 4),
        "auroc": round(auroc(p, y), 4), "log_loss": round(log_loss(p, y), 4),
        "best_of_2_accuracy" if samples == 2 else f"best_of_{samples}_accuracy":
            round(best / max(1, problems), 4),
        "first_sample_accuracy": round(first / max(1, problems), 4),
        "oracle_accuracy": round(oracle / max(1, problems), 4),
    }


def choose_l2(x: Any, y: Any, problem_of: Sequence[int], *, seed: int = SEED,
              grid: Sequence[float] = L2_GRID,
              val_fraction: float = VAL_FRACTION) -> tuple[float, dict[str, Any]]:
    """The grid value with the lowest validation log-loss (split by problem)."""
    import torch

    ids = sorted(set(problem_of))
    random.Random(seed).shuffle(ids)
    val = set(ids[:max(1, int(len(ids) * val_fraction))])
    vi = torch.tensor([i for i, k in enumerate(problem_of) if k in val])
    ti = torch.tensor([i for i, k in enumerate(problem_of) if k not in val])
    table = {}
    for l2 in grid:
        w = fit_head(x[ti], y[ti], l2, seed)
        p = probabilities(x[vi], w)
        yv = [int(t) for t in y[vi]]
        table[str(l2)] = {"val_log_loss": round(log_loss(p, yv), 4),
                          "val_auroc": round(auroc(p, yv), 4),
                          "val_accuracy": round(sum((q >= 0.5) == bool(t)
                                                    for q, t in zip(p, yv)) / len(yv), 4)}
    best = min(grid, key=lambda v: (table[str(v)]["val_log_loss"], v))
    return best, {"grid": table, "chosen_l2": best, "val_problems": len(val),
                  "val_samples": len(vi), "train_samples": len(ti)}


# -- the recipe -----------------------------------------------------------------------


def train(base_dir: Path, out_dir: Path = HEAD_DIR, *, train_problems: int = TRAIN_PROBLEMS,
          heldout: int = HELDOUT_PROBLEMS, samples: int = SAMPLES,
          temperature: float = TEMPERATURE, base_url: str | None = None,
          samples_file: Path | None = None, sampler: str = "server",
          log: Log = print) -> dict[str, Any]:
    """Run the recipe on the policy's folder ``base_dir`` (the prepared
    ``smollm2-135m-instruct``); write ``score.safetensors`` and ``metrics.json``
    into ``out_dir``.

    ``base_url``: a running server on the policy (default: start one, under
    ``--dtype float32``). ``samples_file``: a JSON file of sampled solutions to
    reuse (written there when absent).
    """
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    start = time.perf_counter()
    torch.set_num_threads(2)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    train_items = training_problems(train_problems, heldout=heldout)
    test_items = heldout_problems(heldout)
    train_prompts = [chat_prompt(tokenizer, it) for it in train_items]
    test_prompts = [chat_prompt(tokenizer, it) for it in test_items]

    sampling = {"temperature": temperature, "max_new_tokens": MAX_NEW_TOKENS,
                "samples": samples, "sampling_seed": SAMPLING_SEED, "sampler": sampler}
    if samples_file is not None and samples_file.is_file():
        saved = json.loads(samples_file.read_text())
        if saved["sampling"] != sampling or saved["prompts"] != train_prompts + test_prompts:
            raise ValueError(f"{samples_file} was sampled with other settings or prompts")
        solutions = saved["solutions"]
        gen_seconds = saved["seconds"]
    else:
        gen_start = time.perf_counter()
        prompts = train_prompts + test_prompts
        if sampler == "transformers":
            policy = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).eval()
            solutions = sample_solutions_hf(policy, tokenizer, prompts, samples,
                                            temperature=temperature, log=log)
            del policy
        elif base_url is None:
            from sglang_ilsi_lab.server_process import ServerProcess

            with ServerProcess(base_dir, ["--ilsi"], ["--dtype", "float32"]) as server:
                solutions = sample_solutions(server.base_url, prompts, samples,
                                             temperature=temperature, log=log)
        else:
            solutions = sample_solutions(base_url, prompts, samples, temperature=temperature,
                                         log=log)
        gen_seconds = round(time.perf_counter() - gen_start, 1)
        if samples_file is not None:
            samples_file.write_text(json.dumps({"sampling": sampling, "prompts": prompts,
                                                "solutions": solutions,
                                                "seconds": gen_seconds}))
    train_solutions, test_solutions = solutions[:len(train_items)], solutions[len(train_items):]

    def flatten(items: list[dict[str, Any]], prompts: list[str], sols: list[list[str]]
                ) -> tuple[list[list[int]], list[int], list[int]]:
        seqs, labels, problem_of = [], [], []
        for k, (it, prompt, group) in enumerate(zip(items, prompts, sols, strict=True)):
            for text in group:
                seqs.append(encode(tokenizer, prompt, text))
                labels.append(int(right_up_to_case(text, it)))
                problem_of.append(k)
        return seqs, labels, problem_of

    train_seqs, train_y, train_problem_of = flatten(train_items, train_prompts, train_solutions)
    test_seqs, test_y, _ = flatten(test_items, test_prompts, test_solutions)
    empty = sum(not t for g in solutions for t in g)
    log(f"[json-orm] label rate: train {sum(train_y) / len(train_y):.3f} "
        f"({len(train_y)}), held-out {sum(test_y) / len(test_y):.3f} ({len(test_y)}); "
        f"empty solutions {empty}")

    feat_start = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).eval()
    x_train = features(model.model, train_seqs, log=log)
    x_test = features(model.model, test_seqs, log=log)
    feat_seconds = round(time.perf_counter() - feat_start, 1)
    del model

    y_train = torch.tensor(train_y, dtype=torch.float32)
    l2, selection = choose_l2(x_train, y_train, train_problem_of)
    log(f"[json-orm] chosen l2 {l2}: {selection['grid'][str(l2)]}")
    w = fit_head(x_train, y_train, l2)
    train_metrics = evaluate(probabilities(x_train, w), train_y, samples)
    heldout_metrics = evaluate(probabilities(x_test, w), test_y, samples)
    log(f"[json-orm] held-out: {heldout_metrics}")

    out_dir.mkdir(parents=True, exist_ok=True)
    save_file({HEAD_KEY: w.reshape(1, -1).contiguous()}, str(out_dir / HEAD_FILE),
              metadata={"name": NAME, "policy": POLICY})
    metrics = {
        "name": NAME, "policy": POLICY, "kind": "outcome", "step_delimiter": DELIMITER,
        "heldout": heldout_metrics, "train": train_metrics, "selection": selection,
        "data": {"train_problem_seed": TRAIN_PROBLEM_SEED, "train_problems": len(train_items),
                 "heldout_seed": synthetic.EVAL_SEED, "heldout_problems": len(test_items),
                 "samples_per_problem": samples, "empty_solutions": empty,
                 "train_label_rate": round(sum(train_y) / len(train_y), 4),
                 "heldout_label_rate": heldout_metrics["label_rate"],
                 "prompt": "chat template of core_tasks.JSON_INSTRUCTION"},
        "sampling": sampling,
        "head": {"features": "final-norm hidden state at the last token",
                 "hidden_size": int(w.numel()), "bias": False,
                 "fit": "LBFGS float64, mean BCE + l2/2 |w*rms|^2", "l2": l2, "seed": SEED},
        "seconds": {"generation": gen_seconds, "features": feat_seconds,
                    "total": round(time.perf_counter() - start, 1)},
    }
    (out_dir / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


# -- the served folder -------------------------------------------------------------------


def read_metrics(head_dir: Path = HEAD_DIR) -> dict[str, Any]:
    return dict(json.loads((head_dir / METRICS_FILE).read_text()))


def load_head(head_dir: Path = HEAD_DIR) -> Any:
    """The committed ``score.weight`` (``[1, hidden]`` float32)."""
    from safetensors.torch import load_file

    return load_file(str(head_dir / HEAD_FILE))[HEAD_KEY]


def build(base_dir: Path, out_dir: Path, head_dir: Path = HEAD_DIR) -> dict[str, Any]:
    """Write the served ``LlamaForSequenceClassification`` folder into ``out_dir``."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoTokenizer, LlamaForSequenceClassification

    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    config = AutoConfig.from_pretrained(base_dir)
    config.num_labels = 1
    config.pad_token_id = (tokenizer.pad_token_id if tokenizer.pad_token_id is not None
                           else tokenizer.eos_token_id)
    config.architectures = ["LlamaForSequenceClassification"]
    config.dtype = "float32"
    config._name_or_path = NAME
    model = LlamaForSequenceClassification(config).to(torch.float32)
    state: dict[str, Any] = {}
    for path in sorted(Path(base_dir).glob("*.safetensors")):
        state.update({k: v for k, v in load_file(str(path)).items() if k.startswith("model.")})
    head = load_head(head_dir)
    if tuple(head.shape) != (1, config.hidden_size):
        raise ValueError(f"{head_dir / HEAD_FILE}: score.weight has shape {tuple(head.shape)}, "
                         f"expected (1, {config.hidden_size})")
    state[HEAD_KEY] = head.float()
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise RuntimeError(f"{NAME}: keys do not match: missing {result.missing_keys[:5]}, "
                           f"unexpected {result.unexpected_keys[:5]}")
    model.eval().save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    metrics = read_metrics(head_dir)
    declared = {"kind": "outcome", "step_delimiter": DELIMITER, "name": NAME, "policy": POLICY,
                "metrics": metrics["heldout"]}
    (out_dir / REWARD_FILE).write_text(json.dumps(declared, indent=2) + "\n")
    return {"architecture": "LlamaForSequenceClassification", "num_labels": 1,
            "pad_token_id": config.pad_token_id,
            "parameters": sum(p.numel() for p in model.parameters()),
            "heldout": metrics["heldout"], "seconds": round(time.perf_counter() - start, 2)}


def score_texts(model: Any, tokenizer: Any, prompts: Sequence[str],
                solutions: Sequence[str]) -> list[float]:
    """Reference scores of a prepared folder's model by the convention (one by one)."""
    import torch

    out = []
    with torch.inference_mode():
        for prompt, solution in zip(prompts, solutions, strict=True):
            ids = torch.tensor([encode(tokenizer, prompt, solution)])
            hidden = model.model(input_ids=ids).last_hidden_state
            out.append(float(torch.sigmoid(model.score(hidden)[0, -1, 0])))
    return out
