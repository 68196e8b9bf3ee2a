"""The ``samples`` capability: one request, N continuations, one answer.

A request whose ``ilsi.method`` is a selection rule (``self_consistency``,
``esc``, ``mbr``, ...) is expanded inside the server into one SGLang request
with ``n`` parallel samples: SGLang prefills the prompt once and the radix
cache shares it with every continuation, which then decode as one batch. The
rule picks one; the client gets it as an ordinary response, with every
candidate, its score and the chosen index in ``meta_info.ilsi`` (and the
OpenAI responses' ``ilsi`` field). Candidates use the request's own sampling
parameters and, through ``ilsi.candidates``, any logits-stage method::

    {"method": "mbr", "n": 16, "utility": "chrf",
     "candidates": {"method": "typical", "mass": 0.9}}

Early-stopping self-consistency samples window by window and stops at the
first unanimous window. A streaming request receives the chosen answer as one
chunk once it is chosen.
"""

from __future__ import annotations

import asyncio
import copy
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import replace
from typing import Any

from sglang_ilsi.params import IlsiRequestError
from sglang_ilsi.plan import SOURCE_SUFFIX, Plan, clients_own, measured_by


def check_request(obj: Any) -> None:
    """What a selection asks of the request's shape (its ilsi object is valid)."""
    items = obj.sampling_params if isinstance(obj.sampling_params, list) else [obj.sampling_params]
    if len(items) > 1 or not single_prompt(obj):
        raise IlsiRequestError("method", "selection methods take one prompt per request")
    if items[0].get("n", 1) != 1:
        raise IlsiRequestError(
            "n", "sampling_params.n (OpenAI n) cannot be combined with a selection method; "
            "use the method's own ilsi.n")
    if obj.custom_logit_processor is not None:
        raise IlsiRequestError("", "a selection method cannot be combined with custom_logit_processor")


def single_prompt(obj: Any) -> bool:
    if obj.text is not None:
        return isinstance(obj.text, str)
    if obj.input_ids is not None:
        return bool(obj.input_ids) and isinstance(obj.input_ids[0], int)
    return False


def check_one_text_prompt(obj: Any, what: str, n_hint: str = "") -> None:
    """What a loop that answers one prompt with text (a search, a prompting
    program) asks of the request's shape; ``what`` names the loop in the 400s."""
    items = obj.sampling_params if isinstance(obj.sampling_params, list) else [obj.sampling_params]
    if len(items) > 1 or not single_prompt(obj):
        raise IlsiRequestError("method", f"{what} takes one prompt per request")
    if (items[0] or {}).get("n", 1) != 1:
        raise IlsiRequestError("n", f"sampling_params.n (OpenAI n) cannot be combined with "
                               f"{what}{n_hint}")
    if obj.custom_logit_processor is not None:
        raise IlsiRequestError("", f"{what} cannot be combined with custom_logit_processor")
    if any(getattr(obj, key, None) for key in ("return_logprob", "image_data", "video_data",
                                                "audio_data", "input_embeds")):
        raise IlsiRequestError("method", f"{what} takes a text or token prompt and returns "
                               "text: logprobs and multimodal inputs are refused")


def _cumulative_logprob(meta: Mapping[str, Any]) -> float | None:
    entries = meta.get("output_token_logprobs")
    if not entries:
        return None
    return float(sum(e[0] for e in entries if e[0] is not None))


def finish_type(meta: Mapping[str, Any]) -> str | None:
    """The type of an output's ``finish_reason`` (``stop``, ``length``, ...)."""
    reason = meta.get("finish_reason")
    return reason.get("type") if isinstance(reason, dict) else reason


async def run(original: Callable[..., Any], tokenizer_manager: Any, obj: Any, request: Any,
              request_plan: Plan, prepare: Callable[[Any, Plan], None], config: Any
              ) -> AsyncIterator[dict]:
    """Sample the candidates, select, and yield the chosen output once."""
    plan = request_plan.selection
    from sglang_ilsi.selection import Candidate

    start = time.perf_counter()
    if not isinstance(obj.rid, str):  # the response's id (the inner requests get their own)
        obj.rid = uuid.uuid4().hex
    client_wants_logprobs = bool(obj.return_logprob)
    base = dict(obj.sampling_params)
    custom = clients_own(base.get("custom_params"))
    calls = 0

    async def sample(k: int, decoding: Plan) -> list[dict]:
        nonlocal calls
        inner = copy.copy(obj)
        inner.sampling_params = {**base, "n": k, "custom_params": dict(custom)}
        inner.rid = None
        inner.stream = False
        inner.return_logprob = True
        prepare(inner, decoding)
        calls += 1
        out = await original(tokenizer_manager, inner, request).__anext__()
        return out if isinstance(out, list) else [out]

    rule, n = plan.rule, plan.params["n"]
    measured = "confidence" in rule.needs
    if base.get("ignore_eos") and rule.ends_candidates(plan.params):
        raise IlsiRequestError("ignore_eos", f"{rule.name!r} stops weak candidates with "
                               "end-of-sequence, which ignore_eos would override")
    outputs: list[dict] = []
    candidates: list[Candidate] = []
    while len(outputs) < n:  # round by round while the rule wants more
        size = min(rule.round_size(plan.params, len(outputs)), n - len(outputs))
        if size < 1:
            break
        decoding = (measured_by(plan.candidates, rule.meter(plan.params, candidates))
                    if measured else plan.candidates)
        outputs += await sample(size, decoding)
        candidates = [_candidate(i, o, measured) for i, o in enumerate(outputs)]
        if rule.enough(candidates, plan.params):
            break

    reward_ms, reward_tokens, reward_cached, step_rewards = 0.0, 0, 0, None
    if "reward" in rule.needs and plan.params.get("reward", "model") == "model":
        from sglang_ilsi.engine.http import reward_service

        scored = await reward_service.rewards(
            config, plan.params, prompt_text(tokenizer_manager, obj),
            [reward_service.steps_of(config, plan.params, o["text"]) for o in outputs])
        reward_ms, reward_tokens, step_rewards = scored.ms, scored.tokens, scored.step_scores
        reward_cached = scored.cached_tokens
        candidates = [replace(c, reward=r) for c, r in zip(candidates, scored.rewards,
                                                           strict=True)]
    elif "reward" in rule.needs:
        reward_start = time.perf_counter()
        rewards = await verifier_rewards(tokenizer_manager, obj, outputs, plan.params, request)
        reward_ms = (time.perf_counter() - reward_start) * 1000.0
        candidates = [replace(c, reward=r) for c, r in zip(candidates, rewards, strict=True)]
    select_start = time.perf_counter()
    loop = asyncio.get_running_loop()
    selection = await loop.run_in_executor(None, rule.select, candidates, plan.params)
    select_ms = (time.perf_counter() - select_start) * 1000.0

    chosen = outputs[selection.index]
    meta = dict(chosen["meta_info"])
    inner_report = meta.pop("ilsi", None)
    if not client_wants_logprobs:
        for key in ("output_token_logprobs", "input_token_logprobs", "output_top_logprobs",
                    "input_top_logprobs", "output_token_ids_logprobs", "input_token_ids_logprobs"):
            meta.pop(key, None)
    report_selection = selection.to_dict()
    metas = [o["meta_info"] for o in outputs]
    completion = [m.get("completion_tokens", 0) for m in metas]
    meta["ilsi"] = {
        "method": plan.rule.name,
        "family": plan.rule.family,
        "params": plan.params,
        "source": request_plan.source,
        "why": ("selection rule chosen by the request's model-name suffix"
                if request_plan.source == SOURCE_SUFFIX else
                "selection rule chosen by the request (custom_params.ilsi)"),
        "chosen": selection.index,
        "selection": report_selection,
        "candidates": [
            {"index": c.index, "text": c.text, "output_ids": list(c.token_ids),
             "score": report_selection["scores"][i],
             "answer": (selection.answers[i] if selection.answers is not None else None),
             "logprob": c.logprob, "reward": c.reward, "finish_reason": c.finish_reason,
             "completion_tokens": completion[i],
             **({"step_rewards": list(step_rewards[i])} if step_rewards is not None else {}),
             **({"confidence": dict(c.confidence)} if c.confidence is not None else {})}
            for i, c in enumerate(candidates)
        ],
        "candidates_method": inner_report,
        "cost": {
            "samples": len(outputs),
            "generate_calls": calls,
            "candidate_completion_tokens": sum(completion),
            "extra_forward_tokens": sum(completion) - completion[selection.index],
            "prefill_tokens_computed": sum(
                m.get("prompt_tokens", 0) - m.get("cached_tokens", 0) for m in metas),
            "select_ms": round(select_ms, 3),
            "reward_ms": round(reward_ms, 3),
            **({"reward_model_tokens": reward_tokens, "reward_model_cached_tokens": reward_cached}
               if step_rewards is not None else {}),
            "wall_ms": round((time.perf_counter() - start) * 1000.0, 3),
        },
    }
    meta["id"] = obj.rid
    out = dict(chosen)
    out["meta_info"] = meta
    yield out


def _candidate(index: int, output: Mapping[str, Any], measured: bool) -> Any:
    from sglang_ilsi.selection import Candidate

    meta = output["meta_info"]
    report = meta.get("ilsi") if measured else None
    stats = report.get("stats") if isinstance(report, Mapping) else None
    return Candidate(index=index, text=output["text"],
                     token_ids=tuple(output.get("output_ids") or ()),
                     logprob=_cumulative_logprob(meta), finish_reason=finish_type(meta),
                     confidence=dict(stats) if isinstance(stats, Mapping) else None)


def prompt_text(tokenizer_manager: Any, obj: Any) -> str:
    """The request's prompt as text (token-id prompts decoded), as a reward model reads it."""
    if obj.text is not None:
        return obj.text
    return tokenizer_manager.tokenizer.decode(list(obj.input_ids))


def _first_token(tokenizer: Any, text: str, param: str) -> int:
    ids = tokenizer.encode(text, add_special_tokens=False)
    if not ids:
        raise IlsiRequestError(param, f"{text!r} encodes to no token")
    return int(ids[0])


async def verifier_rewards(tokenizer_manager: Any, obj: Any, outputs: list[dict],
                           params: Mapping[str, Any], request: Any) -> list[float]:
    """r_i = P(yes) / (P(yes) + P(no)) after ``prompt + candidate_i + verifier_prompt``,
    read with SGLang's own scoring path on the policy model (one batched call)."""
    tokenizer = tokenizer_manager.tokenizer
    if obj.input_ids is not None:
        query = list(obj.input_ids)
    else:
        query = list(tokenizer.encode(obj.text))
    suffix = list(tokenizer.encode(params["verifier_prompt"], add_special_tokens=False))
    yes = _first_token(tokenizer, params["yes"], "yes")
    no = _first_token(tokenizer, params["no"], "no")
    if yes == no:
        raise IlsiRequestError("no", "the yes and no labels start with the same token")
    items = [list(o.get("output_ids") or ()) + suffix for o in outputs]
    result = await tokenizer_manager.score_request(
        query=query, items=items, label_token_ids=[yes, no], apply_softmax=True, request=request)
    return [float(row[0]) for row in result.scores]
