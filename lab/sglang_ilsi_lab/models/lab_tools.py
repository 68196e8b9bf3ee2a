"""``lab-tools``: the lab target fine-tuned to call the calculator by itself.

The plugin's tool loop (:mod:`sglang_ilsi.engine.http.tool_loop`) needs a model
that decides on its own to write ``<tool_call>``. SmolLM2-135M's template has
no tools, so this lab model learns the loop's transcript format on the lab
tasks: for an arithmetic question it writes a calculator call, reads the
result the server appends and answers with it; for a JSON-extraction prompt
it answers directly, without a call::

    Q: 23+45-12=?\\nA: <tool_call>\\n{"name": "calculator", "arguments": {"expression": "23+45-12"}}
    </tool_call>\\n<tool_response>\\n56\\n</tool_response>\\n#### 56<|endoftext|>

Only what the model writes is supervised (`` <tool_call>``, the call's JSON,
``#### N`` and EOS); the newline after ``<tool_call>`` and the response block
are the server's. A whole transcript is tokenized at once, as the server
tokenizes the growing prompt of each loop segment. ``scripts/train_lab_tools.py``
fine-tunes ``lab-target`` on these transcripts (1-4 operations, so the
four-operation problems the base model fails are in reach) and commits the
folder ``lab_pair/tools``; :func:`run_loop` is the loop without a server, for
its evaluation.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Sequence

from sglang_ilsi.engine.http import tool_loop
from sglang_ilsi.engine.http.tool_loop import OPEN
from sglang_ilsi_lab.data import synthetic
from sglang_ilsi_lab.models import lab

# OpenAI chat: the user's message is the question (the tools' system text is not shown to
# this model, which calls the calculator without being told how)
CHAT_TEMPLATE = ("{% for message in messages %}{% if message['role'] == 'user' %}"
                 "Q: {{ message['content'] }}\nA:{% endif %}{% endfor %}")
_EXPR = re.compile(r"^Q: (.+)=\?\nA:$")


def expression(prompt: str) -> str:
    """The arithmetic expression of a lab prompt (``"Q: 23+45=?\\nA:"`` → ``"23+45"``)."""
    match = _EXPR.match(prompt)
    if match is None:
        raise ValueError(f"not an arithmetic lab prompt: {prompt!r}")
    return match.group(1)


def call_json(expr: str) -> str:
    return json.dumps({"name": "calculator", "arguments": {"expression": expr}})


def response_block(call: str, result: str) -> str:
    """What the server appends after the call's JSON, for a call that returned ``result``."""
    return tool_loop.response_block(call, {"result": result, "error": None})


def segments(item: dict) -> list[tuple[str, bool]]:
    """An item's transcript as (text, written by the model) pieces."""
    if item["task"] != "arithmetic":
        return [(item["prompt"], False), (item["answer"], True)]
    call = call_json(expression(item["prompt"]))
    return [(item["prompt"], False), (f" {OPEN}", True), ("\n", False), (call, True),
            (response_block("", str(item["result"])), False), (f"#### {item['result']}", True)]


def encode(tokenizer, items: Sequence[dict]) -> list[tuple[list[int], list[int]]]:
    """(input ids, labels) per item: the whole transcript tokenized at once; a token
    is supervised when it starts inside a model-written piece; EOS is supervised."""
    eos = tokenizer.eos_token_id
    out = []
    for item in items:
        pieces = segments(item)
        text = "".join(t for t, _ in pieces)
        written, cursor = [], 0
        for piece, by_model in pieces:
            if by_model:
                written.append((cursor, cursor + len(piece)))
            cursor += len(piece)
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = list(enc["input_ids"])
        labels = [tok if any(a <= start < b for a, b in written) else -100
                  for tok, (start, _end) in zip(ids, enc["offset_mapping"])]
        out.append((ids + [eos], labels + [eos]))
    return out


def training_items(n: int, seed: int, arithmetic_share: float = 0.7) -> list[dict]:
    """``n`` items: arithmetic with 1-4 operations (as tool transcripts) and JSON
    extraction (answered directly), evaluation prompts removed."""
    rng = random.Random(f"lab-tools/{seed}")
    n_arith = round(n * arithmetic_share)
    per = n_arith // 4
    items = [it for k in (1, 2, 3, 4)
             for it in synthetic.arithmetic(per, seed=seed + 1000 * k, difficulty=k)]
    items += synthetic.json_extraction(n - len(items), seed=seed)
    rng.shuffle(items)
    banned = lab.heldout_prompts() | {it["prompt"] for it in synthetic.arithmetic(
        500, seed=synthetic.EVAL_SEED, difficulty=4)}
    return [it for it in items if it["prompt"] not in banned]


def run_loop(model, tokenizer, prompt: str, max_calls: int = 2,
             max_new_tokens: int = lab.MAX_NEW_TOKENS) -> tuple[str, list[dict]]:
    """The tool loop without a server (greedy, no call grammar: the call is the first
    JSON value the model writes after ``<tool_call>``): (the text after the last
    tool response, the calls made)."""
    import torch

    from sglang_ilsi.tools import Calculator, ToolError, check_arguments

    eos = tokenizer.eos_token_id
    transcript, calls = "", []

    def generate() -> str:
        ids = tokenizer(prompt + transcript, add_special_tokens=False, return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**ids, do_sample=False, max_new_tokens=max_new_tokens,
                                 eos_token_id=eos, pad_token_id=eos)
        new = out[0, ids["input_ids"].shape[1]:].tolist()
        return tokenizer.decode(new[:new.index(eos)] if eos in new else new)

    while True:
        text = generate()
        if OPEN not in text or len(calls) >= max_calls:
            return text.split(OPEN)[0], calls
        transcript += text.split(OPEN)[0] + f"{OPEN}\n"
        # the server's call grammar ends the call with its JSON object; here the
        # first JSON value the model writes is the call
        written = generate().lstrip()
        record: dict = {"call": written.split("\n")[0]}
        try:
            call, end = json.JSONDecoder().raw_decode(written)
            record["call"] = written[:end]
            arguments = check_arguments(Calculator, call.get("arguments"))
            record["result"] = Calculator({}).run(arguments)
        except (json.JSONDecodeError, AttributeError, ToolError) as exc:
            record["result"] = f"error: {exc}"
        calls.append(record)
        transcript += response_block(record["call"], record["result"])
