"""SGLang frontend primitives for sglang-ilsi.

Use them inside ``@sgl.function`` programs, on any SGLang server:

- :func:`self_consistency`, :func:`mbr_gen`: fork N branches with the public
  frontend API (``s.fork(n)``, ``sgl.gen``; the radix cache shares the
  prefix), then pick one with :mod:`sglang_ilsi.selection` and append it;
- :func:`best_of_n`: the same, ranked by the model itself as a yes/no verifier
  through the server's ``/v1/score``;
- :func:`tree_of_thoughts`: breadth-first over thoughts, each level's forks
  valued by the server's reward model (``/ilsi/reward``);
- :func:`skeleton_of_thought`: an outline first, then all its points expanded
  in parallel in one batched request (:mod:`sglang_ilsi.skeleton`);
- :func:`cot`, :func:`zero_shot_cot`, :func:`echo_prompt`, :func:`urial`: the
  prompting programs of :mod:`sglang_ilsi.methods.prompting` written with
  ``s += ...`` and ``sgl.gen`` (the same prompt pieces; the server runs them
  per request too, ``{"method": "zero_shot_cot"}``);
- :func:`ilsi_gen`: one generation with any server-side method (a logits
  method such as ``typical``, or a selection method run inside the server),
  which needs the plugin on the server.

Each primitive appends the chosen text to ``s`` and stores it under ``name``;
the selection report is stored under ``name + "_ilsi"``.
"""

from __future__ import annotations

import math
from typing import Any

import requests

from sglang_ilsi.registry import get_rule
from sglang_ilsi.selection import Candidate


def _backend(s: Any) -> Any:
    backend = s.stream_executor.backend
    if not hasattr(backend, "base_url"):
        raise TypeError("sglang_ilsi.lang needs a RuntimeEndpoint backend (an SGLang server)")
    return backend


def _headers(backend: Any) -> dict[str, str]:
    key = getattr(backend, "api_key", None)
    return {"Authorization": f"Bearer {key}"} if key else {}


def _sample(s: Any, name: str, n: int, max_tokens: int, temperature: float,
            **gen_kwargs: Any) -> list[str]:
    import sglang as sgl

    forks = s.fork(n)
    forks += sgl.gen(name + "_candidate", max_tokens=max_tokens, temperature=temperature,
                     **gen_kwargs)
    texts = [f[name + "_candidate"] for f in forks]
    forks.join()
    return texts


def _commit(s: Any, name: str, text: str, report: dict[str, Any]) -> str:
    s += text
    s.set_var(name, text)
    s.set_var(name + "_ilsi", report)
    return text


def _select(s: Any, name: str, rule_name: str, texts: list[str], params: dict[str, Any],
            rewards: list[float] | None = None) -> str:
    rule = get_rule(rule_name)
    validated = rule.validate({**params, "n": len(texts)})
    candidates = [Candidate(index=i, text=t, reward=None if rewards is None else rewards[i])
                  for i, t in enumerate(texts)]
    selection = rule.select(candidates, validated)
    report = {"method": rule_name, "params": validated, "candidates": texts,
              "selection": selection.to_dict()}
    return _commit(s, name, texts[selection.index], report)


def self_consistency(s: Any, name: str, n: int = 8, *, max_tokens: int = 128,
                     temperature: float = 0.7, extractor: str = "last_number",
                     **params: Any) -> str:
    """Self-consistency (Wang et al. 2023): n branches, majority vote over the
    extracted answers; appends the first branch with the winning answer."""
    texts = _sample(s, name, n, max_tokens, temperature)
    return _select(s, name, "self_consistency", texts, {"extractor": extractor, **params})


def mbr_gen(s: Any, name: str, n: int = 8, *, max_tokens: int = 128, temperature: float = 0.7,
            utility: str = "chrf", **params: Any) -> str:
    """Minimum Bayes-risk decoding (Kumar & Byrne 2004): n branches, append the
    one with the highest mean utility against the others."""
    texts = _sample(s, name, n, max_tokens, temperature)
    return _select(s, name, "mbr", texts, {"utility": utility, **params})


def best_of_n(s: Any, name: str, n: int = 8, *, max_tokens: int = 128, temperature: float = 0.7,
              verifier_prompt: str = "\nIs the answer above correct? Answer Yes or No.\nAnswer:",
              yes: str = " Yes", no: str = " No") -> str:
    """Best-of-N with the policy model as verifier: reward = P(yes)/(P(yes)+P(no))
    after ``prompt + candidate + verifier_prompt`` (the server's ``/v1/score``)."""
    prefix = s.text()
    texts = _sample(s, name, n, max_tokens, temperature)
    backend = _backend(s)
    tok = requests.post(backend.base_url + "/v1/tokenize",
                        json={"prompt": [yes, no], "add_special_tokens": False},
                        headers=_headers(backend), timeout=60)
    tok.raise_for_status()
    labels = [ids[0] for ids in tok.json()["tokens"]]
    r = requests.post(backend.base_url + "/v1/score", json={
        "query": prefix, "items": [t + verifier_prompt for t in texts],
        "label_token_ids": labels, "apply_softmax": True,
    }, headers=_headers(backend), timeout=300)
    r.raise_for_status()
    rewards = [float(row[0]) for row in r.json()["scores"]]
    return _select(s, name, "best_of_n", texts, {"yes": yes, "no": no}, rewards)


def ilsi_gen(s: Any, name: str, method: str | dict[str, Any], *, max_tokens: int = 128,
             temperature: float = 0.7, **params: Any) -> str:
    """Generate with a server-side sglang-ilsi method (needs the plugin on the
    server): ``ilsi_gen(s, "answer", "typical", mass=0.9)`` or a selection run
    inside the server, ``ilsi_gen(s, "answer", "mbr", n=16)``."""
    spec = {"method": method, **params} if isinstance(method, str) else {**method, **params}
    backend = _backend(s)
    body = {"text": s.text(), "sampling_params": {
        "max_new_tokens": max_tokens, "temperature": temperature,
        "custom_params": {"ilsi": spec}}}
    r = requests.post(backend.base_url + "/generate", json=body, headers=_headers(backend),
                      timeout=600)
    if r.status_code >= 400:
        raise ValueError(f"ilsi_gen: HTTP {r.status_code}: {r.text}")
    out = r.json()
    return _commit(s, name, out["text"], out["meta_info"].get("ilsi", {}))


def skeleton_of_thought(s: Any, name: str, question: str, *, max_points: int = 6,
                        skeleton_tokens: int = 96, point_tokens: int = 64,
                        temperature: float = 0.0, chat_template: Any = None) -> str:
    """Skeleton-of-thought (Ning et al., ICLR 2024; :mod:`sglang_ilsi.methods.prompting.skeleton_of_thought`):
    one request for a numbered outline of ``question``, then every point
    expanded in parallel in **one** batched ``/generate`` call; appends the
    assembled answer. ``name + "_ilsi"`` holds the skeleton, points, expansions
    and cost (tokens, seconds per stage, calls). Prompts use ``chat_template``
    (a ``sglang.lang.chat_template.ChatTemplate``), else the backend's."""
    from sglang_ilsi.methods.prompting import skeleton_of_thought as skeleton

    backend = _backend(s)
    template = chat_template or backend.get_chat_template()

    def render(messages: list[dict[str, str]]) -> str:
        # the conversation, then the assistant turn's opening (the reply starts there)
        return template.get_prompt(messages) + template.get_prefix_and_suffix(
            "assistant", messages)[0]

    result = skeleton.run(
        question, render,
        skeleton.http_generate(backend.base_url, _headers(backend)),
        max_points=max_points, skeleton_tokens=skeleton_tokens, point_tokens=point_tokens,
        temperature=temperature)
    report = {"method": "skeleton_of_thought", **result.to_dict()}
    return _commit(s, name, result.answer, report)


def tree_of_thoughts(s: Any, name: str, *, reward_model: str = "", breadth: int = 2,
                     proposals: int = 2, depth: int = 4, step_delimiter: str = "\n",
                     step_max_tokens: int = 64, temperature: float = 0.7,
                     aggregate: str = "min") -> str:
    """Tree of thoughts (Yao et al., NeurIPS 2023), breadth-first, valued by the
    server's reward model. At each of at most ``depth`` levels every kept state
    (the thoughts so far) is forked ``proposals`` ways (``s.fork``: the radix
    cache shares the prefix), each fork generating one thought up to
    ``step_delimiter``; all new states are valued in one ``POST /ilsi/reward``
    (prompt: the program's text before the call; solution: the state's thoughts;
    their step scores folded by ``aggregate``), and the ``breadth`` best of them
    and of the finished states kept before are kept (ties: the finished ones,
    then the new ones in fork order). A thought that ends
    without the delimiter finishes its state, which is kept but not grown. The
    search ends when every kept state has finished; the best kept state's text
    is appended. ``name + "_ilsi"`` lists every state (level, parent, thought,
    value, finished) and the chosen one. Needs the plugin and a reward model on
    the server (``--ilsi-reward-model``); ``reward_model`` may be left empty when
    it serves one."""
    import sglang as sgl

    from sglang_ilsi.methods.search.base import rank_of
    from sglang_ilsi.reward import REWARD_PATH
    from sglang_ilsi.reward import aggregate as fold

    for label, value in (("breadth", breadth), ("proposals", proposals), ("depth", depth)):
        if not 1 <= value <= 64:
            raise ValueError(f"tree_of_thoughts: {label} must be in [1, 64], got {value}")
    backend = _backend(s)
    prompt = s.text()
    key = name + "_thought"
    states: list[dict[str, Any]] = []
    kept: list[dict[str, Any]] = [{"id": -1, "thoughts": [], "finished": False}]
    for level in range(1, depth + 1):
        growing = [state for state in kept if not state["finished"]]
        if not growing:
            break
        forks = s.fork(len(growing) * proposals)
        for i, fork in enumerate(forks):
            fork += "".join(growing[i // proposals]["thoughts"])
        forks += sgl.gen(key, max_tokens=step_max_tokens, temperature=temperature,
                         stop=step_delimiter)
        children = []
        for i, fork in enumerate(forks):
            reason = (fork.get_meta_info(key) or {}).get("finish_reason") or {}
            delimited = isinstance(reason, dict) and reason.get("matched") == step_delimiter
            parent = growing[i // proposals]
            thought = fork[key] + (step_delimiter if delimited else "")
            children.append({"id": len(states) + i, "level": level, "parent": parent["id"],
                             "thoughts": [*parent["thoughts"], thought],
                             "finished": not delimited})
        forks.join()
        r = requests.post(backend.base_url + REWARD_PATH, json={
            "reward_model": reward_model, "prompts": [prompt] * len(children),
            "solutions": [c["thoughts"] for c in children]},
            headers=_headers(backend), timeout=600)
        if r.status_code >= 400:
            raise ValueError(f"tree_of_thoughts: HTTP {r.status_code}: {r.text}")
        for child, scores in zip(children, r.json()["scores"], strict=True):
            child["value"] = fold(tuple(scores), aggregate)
        states += children
        pool = [state for state in kept if state["finished"]] + children
        order = sorted(range(len(pool)), key=lambda j: (-rank_of(pool[j]["value"]), j))
        kept = [pool[j] for j in order[:breadth]]
    chosen = min(kept, key=lambda state: (-rank_of(state.get("value", math.nan)), state["id"]))
    report = {"method": "tree_of_thoughts", "reward_model": reward_model,
              "params": {"breadth": breadth, "proposals": proposals, "depth": depth,
                         "step_delimiter": step_delimiter, "aggregate": aggregate},
              "states": [{k: v for k, v in state.items() if k != "thoughts"}
                         | {"thought": state["thoughts"][-1]} for state in states],
              "chosen": chosen["id"], "kept": [state["id"] for state in kept]}
    return _commit(s, name, "".join(chosen["thoughts"]), report)


# -- prompting programs, written as frontend programs ---------------------------------------
# The pieces come from the server-side programs (sglang_ilsi.methods.prompting), so both
# forms build the same prompts.


def zero_shot_cot(s: Any, name: str, *, max_tokens: int = 128, answer_max_tokens: int = 32,
                  temperature: float = 0.0, trigger: str | None = None,
                  answer_trigger: str | None = None) -> str:
    """Zero-shot CoT (Kojima et al. 2022): appends "Let's think step by step.", the
    reasoning (``name + "_reasoning"``), the answer trigger and the answer
    (``name + "_answer"``); ``name`` holds all of it."""
    import sglang as sgl

    from sglang_ilsi.methods.prompting import zero_shot_cot as program
    from sglang_ilsi.methods.prompting.base import after

    trigger = program.REASONING_TRIGGER if trigger is None else trigger
    answer_trigger = program.ANSWER_TRIGGER if answer_trigger is None else answer_trigger
    opening = after(s.text(), trigger)
    start = len(s.text()) + len(opening) - len(trigger)  # the text begins at the trigger
    s += opening
    s += sgl.gen(name + "_reasoning", max_tokens=max_tokens, temperature=temperature)
    s += after(s.text(), answer_trigger)
    s += sgl.gen(name + "_answer", max_tokens=answer_max_tokens, temperature=temperature,
                 stop=["\n"])
    return _appended(s, name, start)


def echo_prompt(s: Any, name: str, *, max_tokens: int = 128, echo_max_tokens: int = 96,
                temperature: float = 0.0, then: str = "") -> str:
    """EchoPrompt (Mekala et al. 2024): the model restates the question in quotes
    (``name + "_echo"``), then answers (``name + "_answer"``); ``name`` holds all of it."""
    import sglang as sgl

    from sglang_ilsi.methods.prompting import echo_prompt as program
    from sglang_ilsi.methods.prompting.base import Prompt, after

    opening = program.echo_suffix(Prompt(tail=s.text()), program.ECHO_TRIGGER)
    start = len(s.text()) + len(after(s.text(), program.ECHO_TRIGGER)) - len(
        program.ECHO_TRIGGER)  # the text begins at the trigger
    s += opening
    s += sgl.gen(name + "_echo", max_tokens=echo_max_tokens, temperature=temperature,
                 stop=[program.QUOTE])
    s += program.QUOTE
    if then:
        s += after(s.text(), then)
    s += sgl.gen(name + "_answer", max_tokens=max_tokens, temperature=temperature)
    return _appended(s, name, start)


def cot(s: Any, name: str, question: str, *, exemplars: list[dict[str, str]] | None = None,
        num_exemplars: int = 4, max_tokens: int = 128, temperature: float = 0.0) -> str:
    """Few-shot chain of thought (Wei et al. 2022): appends the worked exemplars
    (built-in arithmetic ones, or ``exemplars``: {question, reasoning, answer}),
    ``question`` in the same form, and the model's reasoning and answer (``name``)."""
    import sglang as sgl

    from sglang_ilsi.methods.prompting import cot as program

    chosen = program.check_exemplars(exemplars) if exemplars else \
        list(program.EXEMPLARS[:num_exemplars])
    s += program.exemplar_block(chosen) + program.QUESTION + question + "\n" + program.ANSWER
    s += sgl.gen(name, max_tokens=max_tokens, temperature=temperature, stop=list(program.STOP))
    return s[name]


def urial(s: Any, name: str, query: str, *, num_examples: int = 3, max_tokens: int = 256,
          temperature: float = 0.0) -> str:
    """URIAL (Lin et al. 2024) for a base model: appends the preamble, the stylistic
    examples and ``query`` in their markup, and the model's answer (``name``)."""
    import sglang as sgl

    from sglang_ilsi.methods.prompting import urial as program

    s += program.context(num_examples) + query + program.ANSWER_OPENING
    s += sgl.gen(name, max_tokens=max_tokens, temperature=temperature, stop=list(program.STOP))
    return s[name]


def _appended(s: Any, name: str, start: int) -> str:
    text = s.text()[start:]
    s.set_var(name, text)
    return text
