"""End-to-end: the plugin under tensor parallelism, data parallelism and
``sglang-router``, on this CPU-only machine.

``--tp-size 2`` runs through SGLang's gloo groups: on a machine without CUDA
the plugin turns off the PyNccl communicator SGLang would otherwise build for
each group (``engine/patches.py``) and splits the cores among the ranks
(``SGLANG_CPU_OMP_THREADS_BIND``, ``engine/cpu/portability.py``). Auxiliary
models are sharded with the target's TP group; early-layer logits gather the
LM head's vocabulary shards.

The claim is "greedy output under TP=2 equals TP=1": for one method of each
capability (logits, aux model, second context, layer logits, samples, grammar,
tool loop, speculative) the TP=2 server's tokens equal the one-rank server's,
alone and in a mixed concurrent batch. ``--dp-size 2`` and two replicas behind
``sglang-router`` serve the same tokens as one server, with each replica's
``ilsi`` report reaching the client.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from conftest import (
    LAB_JSON_PROMPT as JSON_PROMPT,
)
from conftest import (
    LAB_JSON_SCHEMA as SCHEMA,
)
from conftest import (
    Client,
    lab_pair_flags,
    lab_pair_paths,
    start_server,
)

from sglang_ilsi_lab.server_process import ServerProcess, free_port

pytestmark = pytest.mark.server

PROMPTS = ["Q: 23+45-12=?\nA:", "Q: 41+18=?\nA:"]

# (capability, method, params): one method of each capability the lab pair serves.
CASES = [
    ("plain", None, {}),
    ("logits", "penalty_decoding", {"penalty": 3.0, "include_prompt": True}),
    ("aux_model", "contrastive_decoding", {"alpha": 0.05}),  # amateur: 3 heads, padded to 4
    ("aux_model", "dexperts", {"expert": "early", "anti_expert": "amateur", "alpha": 1.5}),
    ("second_context", "cad", {"alpha": 1.0, "remove": ["A:"]}),
    ("layer_logits", "dola", {"layers": [0, 1, 2, 3], "alpha": 0.001}),
    ("samples", "self_consistency", {"n": 4}),
]
TOKENS = 12


def _generate(client: Client, prompt: str, method: str | None, params: dict,
              **kw) -> dict:
    ilsi = {"method": method, **params} if method else None
    return client.generate(prompt, max_new_tokens=TOKENS, ilsi=ilsi, **kw)


@pytest.fixture(scope="module")
def tp2() -> Client:
    target, aux = lab_pair_paths()
    ours, sglang = lab_pair_flags(aux)
    yield from start_server(target, ours, [*sglang, "--tp-size", "2"])


@pytest.mark.parametrize("capability,method,params", CASES, ids=[c[1] or c[0] for c in CASES])
def test_tp2_greedy_equals_tp1(lab_pair_server, tp2, capability, method, params):
    for prompt in PROMPTS:
        one = _generate(lab_pair_server, prompt, method, params)
        two = _generate(tp2, prompt, method, params)
        assert two["output_ids"] == one["output_ids"], (method, prompt)
        if method:
            report = two["meta_info"]["ilsi"]
            assert report["method"] == method
            if capability == "aux_model":
                assert report["cost"]["aux_model_tokens"] > 0
            if capability == "second_context":
                assert report["cost"]["extra_forward_tokens"] > 0


def test_tp2_grammar_equals_tp1(lab_pair_server, tp2):
    for method, params in ((None, {}), ("cfg", {"gamma": 4.0})):
        outs = [_generate(c, JSON_PROMPT, method, params, json_schema=json.dumps(SCHEMA))
                for c in (lab_pair_server, tp2)]
        assert outs[1]["output_ids"] == outs[0]["output_ids"], method
        if len(outs[1]["output_ids"]) < TOKENS:  # closed in time: valid JSON
            assert set(json.loads(outs[1]["text"])) == {"name", "age"}


def test_tp2_tool_loop_equals_tp1(lab_pair_server, tp2):
    """The tool loop (HTTP side: generations with the call grammar, a calculator
    call, the continuation) gives the same transcript on both servers."""
    ilsi = {"method": "tools", "tools": ["calculator"], "tool_choice": "calculator",
            "max_calls": 1}
    one, two = (c.generate(PROMPTS[0], max_new_tokens=40, ilsi=ilsi)
                for c in (lab_pair_server, tp2))
    assert two["meta_info"]["ilsi"]["transcript"] == one["meta_info"]["ilsi"]["transcript"]
    assert two["output_ids"] == one["output_ids"]
    assert len(two["meta_info"]["ilsi"]["calls"]) == 1


def test_tp2_batch_isolation_with_mixed_methods(tp2):
    jobs = [(PROMPTS[i % 2], CASES[i % len(CASES)]) for i in range(12)]

    def run(job):
        prompt, (_, method, params) = job
        return _generate(tp2, prompt, method, params)["output_ids"]

    alone = [run(job) for job in jobs]
    with ThreadPoolExecutor(12) as pool:
        together = list(pool.map(run, jobs))
    assert together == alone


def test_tp2_bad_input_is_400_and_keeps_serving(tp2):
    r = tp2.post("/generate", {"text": PROMPTS[0], "sampling_params": {
        "max_new_tokens": 4, "custom_params": {"ilsi": {"method": "contrastive_decoding",
                                                        "amateur": "nope"}}}})
    assert r.status_code == 400 and "ilsi.amateur" in r.json()["error"]["message"]
    assert tp2.generate(PROMPTS[1], max_new_tokens=4)["output_ids"]


def test_tp2_speculative_ngram_equals_one_rank_greedy(tiny_model_path, tiny_server):
    prompts = ["def hello(world):", "the cat sat on the mat. the cat"]
    ngram = ["--speculative-algorithm", "NGRAM", "--speculative-num-draft-tokens", "4",
             "--tp-size", "2"]
    for server in start_server(tiny_model_path, ["--ilsi"], ngram):
        for prompt in prompts:
            assert (server.generate(prompt, max_new_tokens=24)["output_ids"]
                    == tiny_server.generate(prompt, max_new_tokens=24)["output_ids"])


def test_aux_model_load_failure_under_tp_stops_the_launch(tmp_path):
    target, aux = lab_pair_paths()
    broken = tmp_path / "amateur"
    shutil.copytree(aux["amateur"], broken)
    for weights in broken.glob("*.safetensors"):
        weights.write_bytes(weights.read_bytes()[:64])  # truncated: a failed download
    done = subprocess.run(
        [sys.executable, "-m", "sglang.launch_server", "--model-path", target, "--device", "cpu",
         "--attention-backend", "torch_native", "--port", str(free_port()), "--tp-size", "2",
         "--max-total-tokens", "8192",  # each CPU rank would size its KV pool on all memory
         "--ilsi", "--ilsi-aux-model", f"amateur={broken}"],
        capture_output=True, text=True, timeout=240)
    assert done.returncode != 0
    assert re.search(r"--ilsi-aux-model amateur: could not load .* on TP rank [01]",
                     done.stdout + done.stderr), (done.stdout + done.stderr)[-3000:]


# -- data parallel: --dp-size 2 and two replicas behind sglang-router -----------------

DP_CASES = [(None, {}), ("typical", {"mass": 0.5}), ("top_n_sigma", {"n": 1.0}),
            ("cfg", {"gamma": 3.0}), ("dola", {"layers": [0], "alpha": 0.01})]
DP_PROMPTS = ["def hello(world):", "import os\nclass Foo:"]


def test_dp2_serves_the_one_server_tokens(tiny_model_path, tiny_server):
    for server in start_server(tiny_model_path, ["--ilsi"], ["--dp-size", "2"]):
        jobs = [(p, m, params) for p in DP_PROMPTS for m, params in DP_CASES]

        def run(client, job):
            prompt, method, params = job
            return _generate(client, prompt, method, params)

        with ThreadPoolExecutor(len(jobs)) as pool:
            together = list(pool.map(run, [server] * len(jobs), jobs))
        for job, out in zip(jobs, together):
            assert out["output_ids"] == run(tiny_server, job)["output_ids"], job
            if job[1]:
                assert out["meta_info"]["ilsi"]["method"] == job[1]


def test_dp2_aux_models_serve_the_one_server_tokens(lab_pair_server):
    """Each replica of --dp-size 2 loads its own auxiliary models: contrastive
    decoding, DExperts and CAD, concurrently, return the one-server tokens."""
    target, aux = lab_pair_paths()
    ours, sglang = lab_pair_flags(aux)
    jobs = [(p, m, params) for p in PROMPTS for _, m, params in CASES[2:5]] * 2
    for server in start_server(target, ours, [*sglang, "--dp-size", "2",
                                              "--max-total-tokens", "8192"]):
        with ThreadPoolExecutor(len(jobs)) as pool:
            together = list(pool.map(_generate, [server] * len(jobs), *zip(*jobs)))
        for job, out in zip(jobs, together, strict=True):
            assert out["output_ids"] == _generate(lab_pair_server, *job)["output_ids"], job
            report = out["meta_info"]["ilsi"]
            assert report["method"] == job[1]
            assert (report["cost"].get("aux_model_tokens", 0)
                    + report["cost"].get("extra_forward_tokens", 0)) > 0


class Router:
    """``python -m sglang_router.launch_router`` in front of ``workers``
    (round robin), stopped by its own process group."""

    def __init__(self, workers: list[str]):
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log = Path(f"/tmp/sglang-ilsi-router-{self.port}.log")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sglang_router.launch_router", "--worker-urls", *workers,
             "--host", "127.0.0.1", "--port", str(self.port), "--policy", "round_robin",
             "--log-level", "warn"],
            stdout=self.log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout: float = 60) -> None:
        """Until a request goes through (the router answers 503 until its first
        health check of the workers)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                r = requests.post(self.base_url + "/generate", timeout=10, json={
                    "text": "a", "sampling_params": {"max_new_tokens": 1}})
                if r.status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.5)
        raise TimeoutError(self.log.read_text(errors="replace")[-2000:])

    def stop(self) -> None:
        import os

        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(self.proc.pid, signal.SIGKILL)


def _requests_served(server: ServerProcess) -> float:
    text = requests.get(server.base_url + "/metrics", timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("sglang:num_requests_total"))


@pytest.fixture(scope="module")
def routed(tiny_model_path):
    replicas = []
    try:
        for _ in range(2):
            replicas.append(ServerProcess(tiny_model_path, ["--ilsi"],
                                          ["--dtype", "float32", "--enable-metrics"]).start())
        router = Router([r.base_url for r in replicas])
        try:
            router.wait_ready()
            yield router, replicas
        finally:
            router.stop()
    finally:
        for replica in replicas:
            replica.stop()


def test_router_completions_reach_both_replicas_with_their_reports(routed, tiny_server):
    router, replicas = routed
    before = [_requests_served(r) for r in replicas]
    model = tiny_server.model
    for method, params in DP_CASES[1:]:
        for prompt in DP_PROMPTS:
            body = {"model": model, "prompt": prompt, "max_tokens": TOKENS, "temperature": 0,
                    "custom_params": {"ilsi": {"method": method, **params}}}
            r = requests.post(router.base_url + "/v1/completions", json=body, timeout=60)
            assert r.status_code == 200, r.text
            out = r.json()
            assert out["ilsi"]["method"] == method and out["ilsi"]["source"] == "request"
            direct = _generate(tiny_server, prompt, method, params)
            assert out["choices"][0]["text"] == direct["text"]
    after = [_requests_served(r) for r in replicas]
    assert all(a - b >= 4 for a, b in zip(after, before)), (before, after)


def test_router_model_suffix_selection_and_streaming(routed, tiny_server):
    router, _ = routed
    oa_model = tiny_server.model
    chat = requests.post(router.base_url + "/v1/chat/completions", timeout=60, json={
        "model": oa_model + "+typical", "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 6, "temperature": 0})
    assert chat.status_code == 200, chat.text
    assert chat.json()["ilsi"]["source"] == "model_suffix"
    # selection with n: one call, N samples, the chosen answer (the report lists them)
    picked = requests.post(router.base_url + "/v1/completions", timeout=60, json={
        "model": oa_model + "+self_consistency", "prompt": DP_PROMPTS[0], "max_tokens": 2,
        "temperature": 1.0}).json()
    report = picked["ilsi"]
    assert report["cost"]["samples"] == 8 and len(picked["choices"]) == 1
    assert picked["choices"][0]["text"] == report["candidates"][report["chosen"]]["text"]
    # streaming: the report arrives as the last data chunk before [DONE]
    with requests.post(router.base_url + "/v1/completions", stream=True, timeout=60, json={
            "model": oa_model, "prompt": DP_PROMPTS[1], "max_tokens": 4, "temperature": 0,
            "stream": True, "custom_params": {"ilsi": {"method": "typical"}}}) as r:
        chunks = [json.loads(line[6:]) for line in r.iter_lines()
                  if line.startswith(b"data: ") and line != b"data: [DONE]"]
    assert chunks[-1]["ilsi"]["method"] == "typical"
    # bad input: the replica's 400 reaches the client, and serving goes on
    bad = requests.post(router.base_url + "/v1/completions", timeout=60, json={
        "model": oa_model, "prompt": "a", "max_tokens": 2,
        "custom_params": {"ilsi": {"method": "typical", "mass": 7}}})
    assert bad.status_code == 400 and "ilsi.mass" in bad.text
    assert requests.post(router.base_url + "/v1/completions", timeout=60, json={
        "model": oa_model, "prompt": "a", "max_tokens": 2}).status_code == 200


def test_router_drops_custom_params_of_chat_and_generate(routed):
    """sglang-router 0.3.2 re-serialises chat and ``/generate`` bodies through
    its own request types and drops fields it does not know, ``custom_params``
    among them (completions keep them). Behind it, those requests choose
    methods by model-name suffix or get the server default; this test pins
    the router's behaviour so that the README's note stays true."""
    router, _ = routed
    r = requests.post(router.base_url + "/generate", timeout=60, json={
        "text": "a", "sampling_params": {"max_new_tokens": 2,
                                         "custom_params": {"ilsi": {"method": "typical"}}}})
    assert r.status_code == 200 and "ilsi" not in r.json()["meta_info"]
