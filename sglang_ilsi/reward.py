"""Reward models served beside the policy (the ``reward`` capability).

An operator loads a reward model with ``--ilsi-reward-model NAME=PATH`` (it
then runs in the server's HTTP process, batched across requests) or names a
second sglang-ilsi server that loaded it with ``--ilsi-reward-url NAME=URL``
(for reward models too big to co-host). Requests name it with the method's
``reward_model`` parameter (empty: the server's only one).

The folder format (what ``scripts/train_reward_models.py`` writes):

- an HF ``*ForSequenceClassification`` (outcome) or ``*ForTokenClassification``
  (process) model with ``num_labels = 1``, its tokenizer, and
  ``sglang_ilsi_reward.json`` = ``{"kind": "outcome" | "process",
  "step_delimiter": "\\n", ...}``;
- or an HF ``*ForCausalLM`` read through its own likelihood, declared with
  ``"reads": "likelihood"``: a verifier without training, e.g. a stronger model
  of the policy's tokenizer judging the policy's steps.

Scoring convention (the same in training, here and in the tests' reference):
a solution is a list of *steps* (the text split after each delimiter, each
step keeping its delimiter); the input is ``tok(prompt) + tok(step_1) + ... +
tok(step_k)``, each piece tokenised alone, no special tokens; the per-token
score is ``sigmoid(score_head(h_t))`` on the last hidden state. An outcome
model's reward is read at the last token; a process model gives one score per
step, read at each step's last token, and a method folds them into one reward
with :func:`aggregate` (``last``, ``min``, ``prod``, ``mean``; Lightman et al.
2023 and Snell et al. 2024 compare these). A likelihood model's per-token score is
p(x_t | x_<t) under the model, and a step's score is the lowest such probability of
any solution token up to the step's end (the least likely token written so far:
one wrong digit is enough to sink it); its outcome score is that of the whole
solution.
"""

from __future__ import annotations

import json
import math
import os
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sglang_ilsi.params import Param
from sglang_ilsi.reward_cache import (
    DEFAULT_CAPACITY_TOKENS,
    CachedPrefix,
    PrefixCache,
    common_prefix_length,
    kv_bytes_per_token,
)

REWARD_FILE = "sglang_ilsi_reward.json"
OUTCOME, PROCESS = "outcome", "process"
ARCHITECTURE_SUFFIX = {OUTCOME: "ForSequenceClassification", PROCESS: "ForTokenClassification"}
HEAD, LIKELIHOOD = "head", "likelihood"  # how a folder is read: its score head, or its LM
AGGREGATES = ("last", "min", "prod", "mean")
MAX_SCORED_TOKENS = 8192  # one scored solution, prompt included
# the most bytes of keys and values one batched read may hold (longer batches are split)
READ_BUDGET_BYTES = 256 * 2**20
REWARD_PATH = "/ilsi/reward"  # a server's reward models: GET lists, POST scores


class RewardModelError(ValueError):
    """A reward-model folder that cannot be served (message names what is wrong)."""


@dataclass(frozen=True)
class RewardInfo:
    """What a reward-model folder declares."""

    name: str
    path: str
    kind: str  # OUTCOME or PROCESS
    step_delimiter: str
    architecture: str
    max_positions: int
    reads: str = HEAD  # HEAD or LIKELIHOOD

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "step_delimiter": self.step_delimiter,
                "architecture": self.architecture, "max_positions": self.max_positions,
                "reads": self.reads}


def read_info(name: str, path: str) -> RewardInfo:
    """Check a reward-model folder without loading its weights."""
    declared_file = os.path.join(path, REWARD_FILE)
    config_file = os.path.join(path, "config.json")
    for needed in (declared_file, config_file):
        if not os.path.isfile(needed):
            raise RewardModelError(f"{path!r} has no {os.path.basename(needed)}")
    try:
        with open(declared_file) as f:
            declared = json.load(f)
        with open(config_file) as f:
            config = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise RewardModelError(f"cannot read {path!r}: {e}") from None
    kind = declared.get("kind")
    if kind not in ARCHITECTURE_SUFFIX:
        raise RewardModelError(f"{REWARD_FILE}: kind must be 'outcome' or 'process', got {kind!r}")
    reads = declared.get("reads", HEAD)
    if reads not in (HEAD, LIKELIHOOD):
        raise RewardModelError(f"{REWARD_FILE}: reads must be {HEAD!r} or {LIKELIHOOD!r}, got "
                               f"{reads!r}")
    architectures = config.get("architectures") or []
    arch = architectures[0] if architectures else ""
    suffix = "ForCausalLM" if reads == LIKELIHOOD else ARCHITECTURE_SUFFIX[kind]
    if not arch.endswith(suffix):
        what = "a likelihood" if reads == LIKELIHOOD else f"a {kind}"
        raise RewardModelError(f"{what} reward model must be an HF *{suffix}, config.json "
                               f"says {arch!r}")
    if reads == HEAD and int(config.get("num_labels",
                                        len(config.get("id2label") or {0: 0}))) != 1:
        raise RewardModelError("a reward model must have num_labels = 1 (one score)")
    delimiter = declared.get("step_delimiter", "\n")
    if not isinstance(delimiter, str) or not delimiter:
        raise RewardModelError(f"{REWARD_FILE}: step_delimiter must be a non-empty string")
    return RewardInfo(name=name, path=os.path.abspath(path), kind=kind, step_delimiter=delimiter,
                      architecture=arch,
                      max_positions=int(config.get("max_position_embeddings") or 2048),
                      reads=reads)


def split_steps(text: str, delimiter: str) -> list[str]:
    """``text`` cut after each ``delimiter`` (kept); a trailing piece without one
    is the last step; no empty steps."""
    steps, start = [], 0
    while True:
        at = text.find(delimiter, start)
        if at < 0:
            break
        steps.append(text[start:at + len(delimiter)])
        start = at + len(delimiter)
    if start < len(text):
        steps.append(text[start:])
    return steps


def aggregate(step_scores: Sequence[float], how: str) -> float:
    """One reward from a process model's step scores (NaN when there is no step)."""
    if not step_scores:
        return math.nan
    if how == "last":
        return float(step_scores[-1])
    if how == "min":
        return float(min(step_scores))
    if how == "prod":
        return float(math.prod(step_scores))
    if how == "mean":
        return math.fsum(step_scores) / len(step_scores)
    raise ValueError(f"unknown aggregate {how!r}; one of {AGGREGATES}")


def reward_of(step_scores: Sequence[float], kind: str, how: str) -> float:
    """A solution's reward: an outcome model's one score, or the fold of a process model's."""
    return float(step_scores[-1]) if kind == OUTCOME and step_scores else aggregate(step_scores, how)


# -- a reward model on a second server --------------------------------------------


def remote_info(name: str, url: str, timeout_s: float = 10.0) -> RewardInfo:
    """What a second server says of its reward model ``name`` (``GET /ilsi/reward``)."""
    try:
        with urllib.request.urlopen(url.rstrip("/") + REWARD_PATH, timeout=timeout_s) as response:
            listing = json.loads(response.read())
    except (OSError, ValueError) as e:
        raise RewardModelError(f"cannot reach {url.rstrip('/') + REWARD_PATH}: {e}") from None
    for entry in listing.get("reward_models", []):
        if entry.get("name") == name and entry.get("where") == "this server":
            return RewardInfo(name=name, path=url, kind=entry["kind"],
                              step_delimiter=entry["step_delimiter"],
                              architecture=entry.get("architecture", ""),
                              max_positions=int(entry.get("max_positions", 0)),
                              reads=entry.get("reads", HEAD))
    served = [e.get("name") for e in listing.get("reward_models", [])]
    raise RewardModelError(f"{url} serves no local reward model named {name!r} (it serves "
                           f"{served or 'none'})")


# -- the parameters every method using a reward model takes -------------------------

REWARD_MODEL_PARAM = Param(
    "reward_model", "str", "", "the reward model scoring the candidates (a name given to "
    "--ilsi-reward-model or --ilsi-reward-url; empty: the server's only one)", max_length=64)
AGGREGATE_PARAM = Param(
    "aggregate", "str", "last", "how a process reward model's step scores make one reward "
    "(an outcome model has one score)", choices=AGGREGATES)


@dataclass(frozen=True)
class Scored:
    """One solution's scores (per step, or the one outcome score), the tokens read,
    and how many of those came from the reward model's KV cache (not computed)."""

    scores: tuple[float, ...]
    tokens: int
    cached: int = 0


# -- the model --------------------------------------------------------------------


class RewardModel:
    """A loaded reward model: :meth:`score` reads a batch of solutions, reusing the
    prefixes it has read before (:mod:`sglang_ilsi.reward_cache`)."""

    def __init__(self, info: RewardInfo, device: str = "cpu",
                 cache_tokens: int = DEFAULT_CAPACITY_TOKENS):
        import torch
        from transformers import (
            AutoModelForCausalLM,
            AutoModelForSequenceClassification,
            AutoModelForTokenClassification,
            AutoTokenizer,
        )

        self.info = info
        self.likelihood = info.reads == LIKELIHOOD
        # a likelihood read re-reads a cached prefix's last token: its next-token
        # distribution scores the first new token
        self.overlap = 1 if self.likelihood else 0
        loader = (AutoModelForCausalLM if self.likelihood else AutoModelForTokenClassification
                  if info.kind == PROCESS else AutoModelForSequenceClassification)
        self.model = loader.from_pretrained(info.path, dtype=torch.float32).to(device).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(info.path)
        self.device = device
        self.parameters = sum(p.numel() for p in self.model.parameters())
        self.bytes = sum(p.numel() * p.element_size() for p in self.model.parameters())
        body = getattr(self.model, "model", None)
        head = getattr(self.model, "lm_head" if self.likelihood else "score", None)
        if body is None or head is None:
            raise RewardModelError(f"{info.architecture}: expected a .model body and a "
                                   f"{'.lm_head' if self.likelihood else '.score head'} "
                                   "(Llama-style models)")
        self._body, self._head = body, head
        self.cache = (PrefixCache(cache_tokens, kv_bytes_per_token(self.model.config, 4))
                      if cache_tokens > 0 else None)

    def encode(self, prompt: str, steps: Sequence[str]) -> tuple[list[int], list[int]]:
        """The input ids and the position of each step's last token."""
        ids, ends, _ = self._encode(prompt, steps)
        return ids, ends

    def _encode(self, prompt: str, steps: Sequence[str]) -> tuple[list[int], list[int], int]:
        """:meth:`encode`, and how many of the ids are the prompt's."""
        def tokens(text: str) -> list[int]:
            return list(self.tokenizer.encode(text, add_special_tokens=False)) if text else []

        ids = tokens(prompt)
        first = len(ids)
        ends = []
        for step in steps:
            ids += tokens(step)
            ends.append(len(ids) - 1)
        return ids, ends, first

    def score(self, prompts: Sequence[str], solutions: Sequence[Sequence[str]],
              jobs: Sequence[int] | None = None) -> list[Scored]:
        """For each (prompt, steps): a process model's score per step, or an
        outcome model's one score (one item); an empty solution scores nothing.
        ``jobs`` says which request each solution came from (default: one); the
        prefix all of one request's solutions share is what the cache keeps."""
        import torch

        encoded = [self._encode(p, s) for p, s in zip(prompts, solutions, strict=True)]
        limit = min(self.info.max_positions, MAX_SCORED_TOKENS)
        for ids, _, _ in encoded:
            if len(ids) > limit:
                raise RewardModelError(f"a scored solution has {len(ids)} tokens; reward model "
                                       f"{self.info.name!r} reads at most {limit}")
        live = [k for k, (ids, ends, _) in enumerate(encoded) if ids and ends]
        results = [Scored((), 0) for _ in encoded]
        if not live:
            return results
        job_of = list(jobs) if jobs is not None else [0] * len(encoded)
        rows = {k: encoded[k][0] for k in live}
        probs: dict[int, Any] = {}
        reused: dict[int, int] = {}
        found = {k: self.cache.longest(rows[k]) if self.cache else None for k in live}
        for k in live:  # a likelihood read needs a cached token before the new ones
            entry = found[k]
            if entry is not None and len(entry) <= self.overlap:
                found[k] = None
        fresh = [k for k in live if found[k] is None]
        if fresh:
            self._read_whole(fresh, rows, job_of, probs)
        extending: dict[tuple[int, tuple[int, ...]], list[int]] = {}
        for k in live:
            entry = found[k]
            if entry is not None:
                extending.setdefault((job_of[k], entry.ids), []).append(k)
                # tokens not computed again (a likelihood read re-reads one)
                reused[k] = len(entry) - (self.overlap if len(rows[k]) > len(entry) else 0)
        for group in extending.values():
            entry = found[group[0]]
            assert entry is not None
            self._read_after(entry, group, rows, probs)
        for k in live:
            ids, ends, first = encoded[k]
            read = ends if self.info.kind == PROCESS else [len(ids) - 1]
            scores = probs[k]
            if self.likelihood:  # the least likely solution token up to each position
                scores = torch.cat([scores[:first], torch.cummin(scores[first:], 0).values])
            results[k] = Scored(tuple(float(scores[t]) for t in read), len(ids),
                                reused.get(k, 0))
        return results

    def _forward(self, input_ids: Any, mask: Any, past: Any = None, positions: Any = None
                 ) -> tuple[Any, Any]:
        """Per-position scores and the KV cache of one batch: the sigmoid of the score
        head, or (likelihood) each token's probability given the tokens before it in
        the batch's rows (the first position, whose predecessor is not in the batch,
        scores 1)."""
        import torch

        with torch.inference_mode():
            out = self._body(input_ids=input_ids.to(self.device), attention_mask=mask.to(
                self.device), past_key_values=past, position_ids=positions,
                use_cache=self.cache is not None)
            if not self.likelihood:
                probs = torch.sigmoid(self._head(out.last_hidden_state)[..., 0].float()).cpu()
                return probs, out.past_key_values
            logprobs = torch.log_softmax(self._head(out.last_hidden_state[:, :-1]).float(), -1)
            following = input_ids[:, 1:].to(logprobs.device).unsqueeze(-1)
            probs = torch.ones(input_ids.shape, dtype=torch.float32)
            probs[:, 1:] = logprobs.gather(-1, following)[..., 0].exp().cpu()
        return probs, out.past_key_values

    def _chunks(self, rows: list[int], tokens_per_row: Any) -> list[list[int]]:
        """``rows`` in runs whose keys and values (each row ``tokens_per_row(row)``
        tokens long) stay within :data:`READ_BUDGET_BYTES`: a batch's cache holds every
        row's keys and values until its read is done; at least one row a run."""
        per_token = self.cache.bytes_per_token if self.cache else 0
        runs: list[list[int]] = [[]]
        width = 0  # the longest row of the current run
        for k in rows:
            wider = max(width, tokens_per_row(k))
            if runs[-1] and (len(runs[-1]) + 1) * wider * per_token > READ_BUDGET_BYTES:
                runs.append([])
                wider = tokens_per_row(k)
            runs[-1].append(k)
            width = wider
        return runs

    def _read_whole(self, rows: list[int], ids_of: dict[int, list[int]], job_of: list[int],
                    probs: dict[int, Any]) -> None:
        """Read ``rows`` from their first token, in right-padded batches; keep each
        job's shared prefix."""
        import torch

        shared: dict[int, int] = {}  # job → its rows' common prefix length
        first_of: dict[int, int] = {}  # job → its first row
        for k in rows:
            first_of.setdefault(job_of[k], k)
        for job in first_of:
            shared[job] = common_prefix_length([ids_of[k] for k in rows if job_of[k] == job])
        for run in self._chunks(rows, lambda k: len(ids_of[k])):
            width = max(len(ids_of[k]) for k in run)
            input_ids = torch.zeros((len(run), width), dtype=torch.long)
            mask = torch.zeros((len(run), width), dtype=torch.long)
            for row, k in enumerate(run):
                input_ids[row, :len(ids_of[k])] = torch.tensor(ids_of[k])
                mask[row, :len(ids_of[k])] = 1
            read, kv = self._forward(input_ids, mask)
            for row, k in enumerate(run):
                probs[k] = read[row, :len(ids_of[k])]
                job = job_of[k]
                if self.cache is None or first_of[job] != k:
                    continue
                n = shared[job]
                self.cache.put(CachedPrefix(
                    tuple(ids_of[k][:n]),
                    [layer.keys[row:row + 1, :, :n].clone() for layer in kv.layers],
                    [layer.values[row:row + 1, :, :n].clone() for layer in kv.layers],
                    read[row, :n].clone()))

    def _read_after(self, entry: CachedPrefix, rows: list[int], ids_of: dict[int, list[int]],
                    probs: dict[int, Any]) -> None:
        """Read ``rows`` (one job's, all starting with ``entry``) on top of the
        entry's KV: only their remaining tokens are computed; keep the longer
        prefix they share in its place."""
        import torch
        from transformers import DynamicCache

        start = len(entry)
        # where this read starts: a likelihood read re-reads the entry's last token
        begin = start - self.overlap
        longer = [k for k in rows if len(ids_of[k]) > start]
        for k in rows:
            if len(ids_of[k]) == start:  # read before: every score is in the entry
                probs[k] = entry.probs
        if not longer:
            return
        shared = common_prefix_length([ids_of[k] for k in rows])
        grown: tuple[list[Any], list[Any], Any] | None = None
        for run in self._chunks(longer, lambda k: len(ids_of[k])):
            width = max(len(ids_of[k]) for k in run) - begin
            n = len(run)
            input_ids = torch.zeros((n, width), dtype=torch.long)
            mask = torch.zeros((n, begin + width), dtype=torch.long)
            mask[:, :begin] = 1
            for row, k in enumerate(run):
                rest = ids_of[k][begin:]
                input_ids[row, :len(rest)] = torch.tensor(rest)
                mask[row, begin:begin + len(rest)] = 1
            past = DynamicCache(ddp_cache_data=[
                (key[..., :begin, :].expand(n, -1, -1, -1),
                 value[..., :begin, :].expand(n, -1, -1, -1))
                for key, value in zip(entry.keys, entry.values, strict=True)])
            positions = (begin + torch.arange(width)).unsqueeze(0).expand(n, -1).to(self.device)
            read, kv = self._forward(input_ids, mask, past, positions)
            for row, k in enumerate(run):
                probs[k] = torch.cat([entry.probs,
                                      read[row, self.overlap:len(ids_of[k]) - begin]])
            if grown is None and shared > start:  # the shared part, from the first row
                grown = ([layer.keys[:1, :, start:shared] for layer in kv.layers],
                         [layer.values[:1, :, start:shared] for layer in kv.layers],
                         read[0, start - begin:shared - begin])
        if self.cache is None or grown is None:
            return
        keys, values, scores = grown
        self.cache.put(CachedPrefix(
            tuple(ids_of[longer[0]][:shared]),
            [torch.cat([old, new], dim=2) for old, new in zip(entry.keys, keys, strict=True)],
            [torch.cat([old, new], dim=2) for old, new in zip(entry.values, values, strict=True)],
            torch.cat([entry.probs, scores])), extends=entry)
