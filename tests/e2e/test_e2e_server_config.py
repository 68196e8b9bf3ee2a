"""End-to-end: server-wide configuration.

One server with a restricted method list, a server-wide default method, an
out-of-tree method file and the operator's opt-in to SGLang's dill
processors; then the launch-time refusals of bad ``--ilsi*`` flags.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import start_server
from reference_decoding import make_transform

from sglang_ilsi import registry
from sglang_ilsi.params import validate_params

pytestmark = pytest.mark.server

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = ROOT / "plugins" / "example_method.py"
DEFAULT = {"penalty": 3.0, "window": 8}
PROMPT = "def hello(world):"
CHUNK = 32  # prefill chunk size of this server: LONG_PROMPT takes several chunks
LONG_PROMPT = "import os\nimport sys\n\n" + "".join(
    f"def f{i}(x):\n    return x + {i}\n\n" for i in range(8))


@pytest.fixture(scope="module")
def client(tiny_model_path):
    yield from start_server(tiny_model_path, [
        "--ilsi", "--ilsi-methods", "typical,penalty_decoding,edt",
        "--ilsi-default-method", "penalty_decoding",
        "--ilsi-default-params", json.dumps(DEFAULT),
        "--ilsi-allow-custom-logit-processor",
        "--ilsi-plugin", str(PLUGIN),
    ], ["--chunked-prefill-size", str(CHUNK)])


def test_server_default_applies_to_requests_that_name_none(client, hf):
    out = client.generate(PROMPT, max_new_tokens=20)
    report = out["meta_info"]["ilsi"]
    assert report["method"] == "penalty_decoding"
    assert report["source"] == "server_default"
    assert "default" in report["why"]
    full = validate_params(registry.get("penalty_decoding").params, DEFAULT)
    assert report["params"] == full
    expected = hf.greedy(hf.encode(PROMPT), 20, make_transform("penalty_decoding", full, hf.eos_ids))
    assert out["output_ids"] == expected
    assert expected != hf.greedy(hf.encode(PROMPT), 20, None)


def test_a_prompt_prefilled_in_chunks_decodes_like_the_reference(client, hf):
    """The steps that only prefill a chunk (their sampled token is discarded)
    are not decoding steps: the method's history and step count skip them."""
    prompt_ids = hf.encode(LONG_PROMPT)
    assert len(prompt_ids) > 3 * CHUNK
    out = client.generate(LONG_PROMPT, max_new_tokens=16)
    full = validate_params(registry.get("penalty_decoding").params, DEFAULT)
    transform = make_transform("penalty_decoding", full, hf.eos_ids)
    assert out["output_ids"] == hf.greedy(prompt_ids, 16, transform)
    assert out["meta_info"]["ilsi"]["cost"]["steps"] == len(out["output_ids"])


def test_method_none_opts_out_of_the_default(client, hf):
    out = client.generate(PROMPT, max_new_tokens=20, ilsi={"method": "none"})
    assert "ilsi" not in out["meta_info"]
    assert out["output_ids"] == hf.greedy(hf.encode(PROMPT), 20, None)


def test_default_reaches_unchanged_openai_clients(client):
    resp = client.openai().chat.completions.create(
        model=client.model, messages=[{"role": "user", "content": "hi"}], max_tokens=5)
    assert resp.model_extra["ilsi"]["source"] == "server_default"


def test_methods_outside_the_allowed_list_are_refused(client):
    r = client.post("/generate", {"text": "x", "sampling_params": {
        "max_new_tokens": 2, "custom_params": {"ilsi": {"method": "eta"}}}})
    assert r.status_code == 400
    msg = r.json()["error"]["message"]
    assert "ilsi.method" in msg and "not enabled" in msg and "'eta'" in msg
    assert client.generate("x", max_new_tokens=2)["output_ids"]


def _edt_reference(row: np.ndarray, t0: float, theta: float, base: float) -> np.ndarray:
    p = np.exp(row - row.max())
    p /= p.sum()
    h = max(-sum(q * np.log(q) for q in p if q > 0), 1e-6)
    return row / max(t0 * base ** (theta / h), 1e-4)


def test_out_of_tree_method_from_plugin_file(client, hf):
    """plugins/example_method.py, loaded with --ilsi-plugin, serves like a built-in."""
    params = {"method": "edt", "t0": 1.0, "theta": 0.5, "base": 0.5, "trace": 4}
    out = client.generate(PROMPT, max_new_tokens=6, temperature=1.0, ilsi=params)
    report = out["meta_info"]["ilsi"]
    assert report["method"] == "edt" and "last_temperature" in report["stats"]
    prompt_ids = hf.encode(PROMPT)
    for step, entry in enumerate(out["meta_info"]["ilsi_trace"]):
        raw = hf.logits(prompt_ids + out["output_ids"][:step])
        after = _edt_reference(raw, 1.0, 0.5, 0.5)
        logp = after - after.max() - np.log(np.exp(after - after.max()).sum())
        for token, lp in entry["after"]:
            assert lp == pytest.approx(logp[token], abs=2e-3)


def test_opted_in_dill_processor_still_works(client, hf):
    """With --ilsi-allow-custom-logit-processor, SGLang's own processors run."""
    from sglang.srt.sampling.custom_logit_processor import DisallowedTokensLogitsProcessor

    plain = hf.greedy(hf.encode(PROMPT), 8, None)
    banned = plain[:3]
    r = client.post("/generate", {
        "text": PROMPT, "custom_logit_processor": DisallowedTokensLogitsProcessor.to_str(),
        "sampling_params": {"max_new_tokens": 8, "temperature": 0,
                            "custom_params": {"token_ids": banned, "ilsi": "none"}}})
    assert r.status_code == 200, r.text
    assert not set(r.json()["output_ids"]) & set(banned)
    # a client processor cannot be combined with a method (here: the default)
    r = client.post("/generate", {
        "text": PROMPT, "custom_logit_processor": DisallowedTokensLogitsProcessor.to_str(),
        "sampling_params": {"max_new_tokens": 4, "custom_params": {"token_ids": banned}}})
    assert r.status_code == 400 and "custom_logit_processor" in r.json()["error"]["message"]


# -- launch-time refusals ---------------------------------------------------------------

def _launch(args: list[str], tiny_model_path: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*args, "--model-path", tiny_model_path, "--device", "cpu", "--port", "1"],
        capture_output=True, text=True, timeout=180,
    )


# Two launches prove that a bad flag stops the server with its message (argparse's and
# our validation's); every message is checked without a launch in test_config.py.
@pytest.mark.parametrize("flags,needle", [
    (["--ilsi", "--ilsi-bogus", "1"], "unrecognized arguments: --ilsi-bogus"),
    (["--ilsi-methods", "typical,nope"], "--ilsi-methods: unknown method(s) ['nope']"),
])
def test_bad_flags_stop_the_launch(tiny_model_path, flags, needle):
    done = _launch([sys.executable, "-m", "sglang.launch_server", *flags], tiny_model_path)
    assert done.returncode != 0
    assert "sglang-ilsi:" in done.stderr and needle in done.stderr


def test_serve_command_is_launch_server_with_ilsi(tiny_model_path):
    exe = str(Path(sys.executable).with_name("sglang-ilsi"))
    done = _launch([exe, "serve", "--ilsi-methods", "nope"], tiny_model_path)
    assert done.returncode != 0 and "unknown method(s) ['nope']" in done.stderr
