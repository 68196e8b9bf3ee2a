"""HTTP-side checks and preparation of what a request's methods need from the
scheduler beyond its own logits (auxiliary models, a second context, early
layers), so that a request the scheduler cannot serve is a 400 naming the
parameter, never a scheduler-side failure.

The second context's token ids are built here (the tokenizer lives on this
side) and travel with the request's encoded choice under
:data:`~sglang_ilsi.methods.base.SECOND_IDS`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sglang_ilsi import plan, registry
from sglang_ilsi.config import IlsiConfig
from sglang_ilsi.methods.base import SECOND_CONTEXT_PARAMS, SECOND_IDS
from sglang_ilsi.params import IlsiRequestError
from sglang_ilsi.plan import MethodChoice

__all__ = ["ModelFacts", "chat_second_ids", "check_and_prepare"]

MAX_SECOND_IDS = 1 << 16


@dataclass(frozen=True)
class ModelFacts:
    """What the HTTP side knows of the served model."""

    num_layers: int | None = None
    vocab_size: int | None = None

    @classmethod
    def of(cls, tokenizer_manager: Any) -> ModelFacts:
        hf = getattr(getattr(tokenizer_manager, "model_config", None), "hf_config", None)
        text = getattr(hf, "text_config", None) or hf
        return cls(
            num_layers=getattr(text, "num_hidden_layers", None),
            vocab_size=getattr(text, "vocab_size", None),
        )


def check_and_prepare(choice: MethodChoice, config: IlsiConfig, facts: ModelFacts,
                      prompt: Any, tokenizer: Any, chat_second_ids: Any = None) -> None:
    """Validate the request's needs against this server and fill in the
    server-side parts of its params (default layers, second-context ids), in
    place. ``prompt`` is the request's text or token ids."""
    if choice.forced and facts.vocab_size is not None and max(choice.forced) >= facts.vocab_size:
        raise IlsiRequestError(plan.FORCED_KEY, f"token id {max(choice.forced)} is outside the "
                               f"model's vocabulary (size {facts.vocab_size})")
    for name, params in choice.steps():
        cls = registry.get(name)
        if "layer_logits" in cls.needs and "layers" in params:
            _check_layers(cls, params, facts)
        if "second_context" in cls.needs and SECOND_IDS not in params:
            params[SECOND_IDS] = _second_ids(cls, params, prompt, tokenizer, chat_second_ids,
                                             facts)
    plan.check_loaded(choice, config)


def _check_layers(cls: type, params: dict[str, Any], facts: ModelFacts) -> None:
    n = facts.num_layers
    if not params["layers"]:
        chosen = cls.default_layers(n) if n is not None else None
        if chosen is None:
            raise IlsiRequestError("layers", "this server cannot tell the model's layer "
                                   "count; list the candidate layers" if n is None else
                                   f"{cls.name} has no default layers; list them")
        params["layers"] = chosen
        return
    if n is not None:
        bad = [i for i in params["layers"] if i >= n]
        if bad:
            raise IlsiRequestError(
                "layers", f"layer {bad[0]} does not exist: this model has {n} decoder "
                f"layers, so early layers are 0 (embeddings) to {n - 1}")
    if len(set(params["layers"])) != len(params["layers"]):
        raise IlsiRequestError("layers", "a layer is listed twice")


def _second_prompt(cls: type, params: dict[str, Any]) -> dict[str, Any]:
    """The request's description of its second prompt (the method's own reading of
    its parameters, or one of the generic second-prompt parameters, or the
    method's default)."""
    own = cls.second_context(params)
    if own is not None:
        return own
    given = {k: params[k] for k in SECOND_CONTEXT_PARAMS if params.get(k)}
    if len(given) > 1:
        names = sorted(given)
        raise IlsiRequestError(names[1], f"give only one of {list(SECOND_CONTEXT_PARAMS)} "
                               f"(got {names})")
    if given:
        return given
    if not cls.second_default:
        raise IlsiRequestError(
            "remove", f"{cls.name} needs a second context: give one of {list(SECOND_CONTEXT_PARAMS)} "
            "(e.g. remove: [the context text])")
    return dict(cls.second_default)


def _encode(tokenizer: Any, text: str, add_special_tokens: bool = True) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=add_special_tokens))


def _second_ids(cls: type, params: dict[str, Any], prompt: Any,
                tokenizer: Any, chat_second_ids: Any, facts: ModelFacts) -> list[int]:
    if chat_second_ids is not None:
        ids = chat_second_ids
    else:
        if tokenizer is None:
            raise IlsiRequestError("method", f"{cls.name} needs the server's tokenizer")
        described = _second_prompt(cls, params)
        explicit = {k for k in SECOND_CONTEXT_PARAMS if params.get(k)}
        if "system" in described:
            if "system" in explicit:
                raise IlsiRequestError("system", "only for chat requests; use prefix or "
                                       "second_prompt with /generate and completions")
            described = {"prefix": described["system"]}
        ids = _second_ids_from_prompt(described, prompt, tokenizer)
    if not isinstance(ids, list) or not ids or not all(isinstance(i, int) for i in ids):
        raise IlsiRequestError(SECOND_IDS, "expected a non-empty list of token ids")
    if len(ids) > MAX_SECOND_IDS:
        raise IlsiRequestError("second_prompt", f"at most {MAX_SECOND_IDS} tokens")
    if facts.vocab_size is not None and any(not 0 <= i < facts.vocab_size for i in ids):
        raise IlsiRequestError(SECOND_IDS, "token id out of the vocabulary")
    return ids


def _second_ids_from_prompt(described: dict[str, Any], prompt: Any,
                            tokenizer: Any) -> list[int]:
    if "second_prompt" in described:
        return _encode(tokenizer, described["second_prompt"])
    from_ids = isinstance(prompt, list)
    if described.get("unconditional"):
        bos = getattr(tokenizer, "bos_token_id", None)
        probe = _encode(tokenizer, "a")
        if bos is not None and probe and probe[0] == bos:
            return [bos]
        ids = prompt if from_ids else _encode(tokenizer, prompt)
        if not ids:
            raise IlsiRequestError("method", "empty prompt")
        return [ids[-1]]
    text = tokenizer.decode(prompt, skip_special_tokens=False) if from_ids else prompt
    if not isinstance(text, str):
        raise IlsiRequestError("method", "a second context needs a text or token-id prompt")
    if "prefix" in described:
        if from_ids:
            return _encode(tokenizer, described["prefix"], add_special_tokens=False) + list(prompt)
        return _encode(tokenizer, described["prefix"] + text)
    changed = _substitute(text, _substitutions(described))
    return _encode(tokenizer, changed, add_special_tokens=not from_ids)


def _substitutions(described: dict[str, Any]) -> list[tuple[str, str, str]]:
    """``(old, new, parameter)`` edits of the prompt: ``remove``'s parts go (new
    ``""``); a method's ``replace`` pairs name their own parameter."""
    if "replace" in described:
        return [tuple(edit) for edit in described["replace"]]
    return [(part, "", f"remove[{i}]") for i, part in enumerate(described["remove"])]


def _substitute(text: str, edits: list[tuple[str, str, str]]) -> str:
    for old, new, param in edits:
        if not old:
            raise IlsiRequestError(param, "empty string")
        if old not in text:
            raise IlsiRequestError(param, "not found in the prompt")
        text = text.replace(old, new, 1)
    return text


def chat_second_ids(choice: MethodChoice, request: Any, tokenizer: Any) -> list[int] | None:
    """For an OpenAI chat request: the second prompt's ids, built from its
    messages through the chat template (``system`` replaces or adds the system
    message, ``prefix`` goes before the last user message's text, ``remove``
    cuts text out of the messages). None when the described is not message-based
    (``second_prompt``, CFG's unconditional prompt): /generate-level rules apply."""
    for name, params in choice.steps():
        cls = registry.get(name)
        if "second_context" not in cls.needs:
            continue
        described = _second_prompt(cls, params)
        if not {"system", "prefix", "remove", "replace"} & set(described):
            return None
        messages = [_message_dict(m) for m in request.messages]
        if "system" in described:
            rest = [m for m in messages if m["role"] != "system"]
            messages = [{"role": "system", "content": described["system"]}, *rest]
        elif "prefix" in described:
            users = [i for i, m in enumerate(messages) if m["role"] == "user"]
            if not users:
                raise IlsiRequestError("prefix", "the chat has no user message")
            last = messages[users[-1]]
            last["content"] = described["prefix"] + last["content"]
        else:
            messages = _substitute_in_messages(messages, _substitutions(described))
        return list(tokenizer.apply_chat_template(messages, tokenize=True,
                                                  add_generation_prompt=True,
                                                  return_dict=False))
    return None


def _message_dict(message: Any) -> dict[str, str]:
    data = message.model_dump() if hasattr(message, "model_dump") else dict(message)
    content = data.get("content")
    if isinstance(content, list):  # content parts: keep the text ones
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return {"role": str(data.get("role")), "content": content or ""}


def _substitute_in_messages(messages: list[dict[str, str]],
                            edits: list[tuple[str, str, str]]) -> list[dict]:
    for old, new, param in edits:
        if not old:
            raise IlsiRequestError(param, "empty string")
        for m in messages:
            if old in m["content"]:
                m["content"] = m["content"].replace(old, new, 1)
                break
        else:
            raise IlsiRequestError(param, "not found in the messages")
    return messages
