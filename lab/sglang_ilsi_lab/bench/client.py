"""The bench's HTTP client: one SGLang server, spoken to like users do.

Prompts are tokenized here (through the model's chat template when the task
asks for chat) and sent as ``input_ids`` to ``/generate``, so what the server
sees is exactly what was scored. Perplexity of an output under the
unmodified model is one extra prefill-only request with input logprobs.
"""

from __future__ import annotations

import time
from functools import cached_property
from typing import Any

import requests

from sglang_ilsi_lab.bench.spec import Generation


class ServerUnreachableError(RuntimeError):
    """The server at a URL does not answer /health."""


class RequestFailedError(RuntimeError):
    """The server answered a request with an error status."""


def check_reachable(url: str, timeout: float = 10.0) -> None:
    """Raise :class:`ServerUnreachableError` unless ``url``/health answers 200."""
    try:
        r = requests.get(url.rstrip("/") + "/health", timeout=timeout)
    except requests.RequestException as exc:
        reason = type(exc).__name__
        if isinstance(exc, requests.ConnectionError):
            reason = "connection refused or host unreachable"
        raise ServerUnreachableError(
            f"cannot reach an SGLang server at {url} ({reason}); start one with "
            "`sglang-ilsi serve --model-path MODEL` or leave out --url to let the bench "
            "start its own") from None
    if r.status_code != 200:
        raise ServerUnreachableError(f"the server at {url} answered /health with HTTP "
                                     f"{r.status_code}: {r.text[:200]}")


class BenchClient:
    def __init__(self, url: str, timeout: float = 900.0):
        self.url = url.rstrip("/")
        self.timeout = timeout

    @cached_property
    def model_info(self) -> dict[str, Any]:
        r = requests.get(self.url + "/get_model_info", timeout=30)
        r.raise_for_status()
        return r.json()

    @cached_property
    def tokenizer(self) -> Any:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(self.model_info.get("tokenizer_path")
                                             or self.model_info["model_path"])

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    def prompt_ids(self, prompt: str, chat: bool | None) -> list[int]:
        """The prompt's token ids: plain, or one user message through the chat template."""
        use_chat = self.has_chat_template if chat is None else chat
        if use_chat:
            ids = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], add_generation_prompt=True,
                tokenize=True)
            if isinstance(ids, dict) or hasattr(ids, "keys"):
                ids = ids["input_ids"]
            return [int(i) for i in ids]
        return [int(i) for i in self.tokenizer(prompt)["input_ids"]]

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        r = requests.post(self.url + "/generate", json=body, timeout=self.timeout)
        if r.status_code != 200:
            raise RequestFailedError(f"HTTP {r.status_code}: {r.text[:300]}")
        out = r.json()
        return out[0] if isinstance(out, list) else out

    def generate(self, prompt_ids: list[int], *, max_new_tokens: int, temperature: float,
                 ilsi: dict[str, Any] | None,
                 sampling: dict[str, Any] | None = None) -> Generation:
        params: dict[str, Any] = {"max_new_tokens": max_new_tokens, "temperature": temperature,
                                  **(sampling or {})}
        if ilsi is not None:
            params["custom_params"] = {"ilsi": ilsi}
        start = time.perf_counter()
        out = self._post({"input_ids": prompt_ids, "sampling_params": params})
        latency = time.perf_counter() - start
        return Generation(text=out.get("text", ""),
                          output_ids=[int(i) for i in out.get("output_ids") or []],
                          prompt_ids=prompt_ids, meta=out.get("meta_info") or {},
                          latency_s=latency)

    def generate_n(self, prompt_ids: list[int], n: int, *, max_new_tokens: int,
                   temperature: float, sampling: dict[str, Any] | None = None
                   ) -> list[Generation]:
        """``n`` plain samples of one prompt in one request (SGLang's ``n``)."""
        params = {"max_new_tokens": max_new_tokens, "temperature": temperature,
                  **(sampling or {}), "n": n}
        start = time.perf_counter()
        r = requests.post(self.url + "/generate",
                          json={"input_ids": prompt_ids, "sampling_params": params},
                          timeout=self.timeout)
        if r.status_code != 200:
            raise RequestFailedError(f"HTTP {r.status_code}: {r.text[:300]}")
        outs = r.json()
        outs = outs if isinstance(outs, list) else [outs]
        latency = time.perf_counter() - start
        return [Generation(text=o.get("text", ""),
                           output_ids=[int(i) for i in o.get("output_ids") or []],
                           prompt_ids=prompt_ids, meta=o.get("meta_info") or {},
                           latency_s=latency) for o in outs]

    def warm_up(self, concurrency: int = 8) -> None:
        """A few untimed concurrent requests: the first batches on a fresh server pay
        one-off costs that would otherwise land on the first cell's wall time."""
        from concurrent.futures import ThreadPoolExecutor

        ids = self.prompt_ids("Write one sentence about the sea. " * 4, None)

        def one(_: int) -> Generation:
            return self.generate(ids, max_new_tokens=8, temperature=0.0, ilsi=None)

        with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
            list(pool.map(one, range(max(1, concurrency))))

    def output_logprobs(self, prompt_ids: list[int], output_ids: list[int]) -> list[float]:
        """log p(output token | prefix) under the plain model, for every output token."""
        if not output_ids:
            return []
        out = self._post({
            "input_ids": prompt_ids + output_ids,
            "sampling_params": {"max_new_tokens": 0, "temperature": 0.0,
                                "custom_params": {"ilsi": {"method": "none"}}},
            "return_logprob": True, "logprob_start_len": len(prompt_ids) - 1,
        })
        rows = out["meta_info"]["input_token_logprobs"]
        values = [row[0] for row in rows if row[0] is not None]
        return [float(v) for v in values[-len(output_ids):]]
