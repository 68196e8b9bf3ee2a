"""Shared fixtures: the tiny model, a transformers reference, and real SGLang
servers (one per configuration, started once: :func:`tiny_server` is shared by
every module that needs the plugin's default configuration on the tiny model,
:func:`lab_pair_server` by the modules that serve the lab pair with its
auxiliary models, :func:`datastore_server` by the retrieval methods' modules)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import requests
from reference_decoding import HFReference

from sglang_ilsi_lab.models import tiny
from sglang_ilsi_lab.server_process import ServerProcess


@pytest.fixture(scope="session")
def tiny_model_path() -> str:
    return str(tiny.ensure())


class Client:
    """A small HTTP client for one server, speaking like users do."""

    def __init__(self, server: ServerProcess):
        self.server = server
        self.base_url = server.base_url
        self.model = server.model_path

    def post(self, path: str, body: dict[str, Any], timeout: float = 120) -> requests.Response:
        return requests.post(self.base_url + path, json=body, timeout=timeout)

    def generate(
        self,
        prompt: str | list[int],
        max_new_tokens: int = 12,
        temperature: float = 0.0,
        ilsi: Any = None,
        **sampling: Any,
    ) -> dict[str, Any]:
        params: dict[str, Any] = {"max_new_tokens": max_new_tokens, "temperature": temperature}
        params.update(sampling)
        if ilsi is not None:
            params["custom_params"] = {"ilsi": ilsi}
        key = "input_ids" if isinstance(prompt, list) else "text"
        r = self.post("/generate", {key: prompt, "sampling_params": params})
        assert r.status_code == 200, r.text
        return r.json()

    def openai(self):
        import openai

        return openai.OpenAI(base_url=self.base_url + "/v1", api_key="unused", max_retries=0)


def start_server(
    model_path: str,
    ilsi_args: Sequence[str] | None,
    sglang_args: Sequence[str] = (),
    extra_env: dict[str, str] | None = None,
) -> Iterator[Client]:
    # The tiny model is float32; SGLang's "auto" would run it in float16 on CPU.
    server = ServerProcess(model_path, ilsi_args, ["--dtype", "float32", *sglang_args],
                           extra_env=extra_env)
    server.start()
    try:
        yield Client(server)
    finally:
        server.stop()
        if os.environ.get("SGLANG_ILSI_KEEP_LOGS") is None:
            try:
                os.unlink(server.log_path)
            except OSError:
                pass


@pytest.fixture(scope="session")
def hf(tiny_model_path: str) -> HFReference:
    """The tiny model in plain transformers: the exactness oracle of the tests that
    serve it (a module serving another model defines its own ``hf``)."""
    return HFReference(tiny_model_path)


@pytest.fixture(scope="session")
def tiny_server(tiny_model_path: str) -> Iterator[Client]:
    """The tiny model served with ``--ilsi`` and nothing else, for the whole session."""
    yield from start_server(tiny_model_path, ["--ilsi"])


def lab_pair_paths() -> tuple[str, dict[str, str]]:
    """The lab target and its two auxiliary models on its tokenizer: ``amateur``
    (the 0.27 M draft) and ``early`` (an earlier checkpoint of the target)."""
    from sglang_ilsi_lab.models import catalog

    return (str(catalog.prepare("lab-target")),
            {"amateur": str(catalog.prepare("lab-draft")),
             "early": str(catalog.prepare("lab-target-early"))})


# A JSON extraction the lab pair's server closes in time under a schema
LAB_JSON_PROMPT = "Extract JSON: Alice is a 34-year-old teacher from Paris.\nJSON:"
LAB_JSON_SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 12},
                   "age": {"type": "integer", "minimum": 0, "maximum": 120}},
    "required": ["name", "age"],
    "additionalProperties": False,
}


def lab_pair_flags(aux: dict[str, str]) -> tuple[list[str], list[str]]:
    """(our flags, SGLang's flags) of the lab pair's server."""
    ours = ["--ilsi", "--ilsi-tools", "calculator"] + [
        a for name, path in aux.items() for a in ("--ilsi-aux-model", f"{name}={path}")]
    # JSON without free whitespace, so that every method's output closes in time
    return ours, ["--constrained-json-disable-any-whitespace"]


@pytest.fixture(scope="session")
def lab_pair_server() -> Iterator[Client]:
    """The lab target with both auxiliary models, one rank, for the whole session."""
    target, aux = lab_pair_paths()
    yield from start_server(target, *lab_pair_flags(aux))


# -- datastores: the retrieval methods' stores and their server ----------------------------

STDLIB_CORPUS = Path(json.__file__).parent  # the stdlib's json package: on every machine
# RTD's reference store: task examples, keyed on their completions only
RTD_EXAMPLES = [{"prompt": "def encode(self, o):\n", "completion": "    return None\n"},
                {"prompt": "import re\n", "completion": "import json\nimport os\n"},
                {"prompt": "class JSONDecodeError(ValueError):", "completion": "\n    pass\n"},
                {"prompt": "def decode(self, s):\n", "completion": "    return s\n"},
                {"prompt": "for key in obj:\n", "completion": "    yield key\n"}]


def _build_store(root: Path, name: str, model: str, layer: int | None, corpus: Path) -> str:
    from sglang_ilsi import datastore

    out = root / name
    datastore.build(str(corpus), model, str(out),
                    datastore.BuildOptions(layer=layer, window=128, stride=64,
                                           max_entries=6000), quiet=True)
    return str(out)


@pytest.fixture(scope="session")
def datastores(tiny_model_path: str, tmp_path_factory: pytest.TempPathFactory
               ) -> dict[str, str]:
    """Stores for the tiny model built by our CLI code: ``stdlib`` (the json
    package, final hidden state), ``mid`` (the same, keyed after layer 1) and
    ``ref`` (RTD's reference store of :data:`RTD_EXAMPLES`), and ``nodocs`` (``stdlib``
    as stores were before they kept their documents' ends)."""
    root = tmp_path_factory.mktemp("stores")
    examples = tmp_path_factory.mktemp("examples")
    (examples / "train.jsonl").write_text("".join(json.dumps(e) + "\n" for e in RTD_EXAMPLES))
    stores = {"stdlib": _build_store(root, "stdlib", tiny_model_path, None, STDLIB_CORPUS),
              "mid": _build_store(root, "mid", tiny_model_path, 1, STDLIB_CORPUS),
              "ref": _build_store(root, "ref", tiny_model_path, None, examples)}
    stores["nodocs"] = _without_document_ends(stores["stdlib"], root / "nodocs")
    return stores


def _without_document_ends(store: str, out: Path) -> str:
    """A copy of ``store`` as sglang-ilsi built stores before documents.npy."""
    shutil.copytree(store, out)
    (out / "documents.npy").unlink()
    meta = json.loads((out / "meta.json").read_text())
    del meta["files"]["documents.npy"]
    (out / "meta.json").write_text(json.dumps(meta))
    return str(out)


def datastore_flags(stores: dict[str, str]) -> list[str]:
    return ["--ilsi", *(a for name, path in stores.items()
                        for a in ("--ilsi-datastore", f"{name}={path}"))]


@pytest.fixture(scope="session")
def datastore_server(tiny_model_path: str, datastores: dict[str, str]) -> Iterator[Client]:
    """The tiny model with every store of :func:`datastores` loaded."""
    yield from start_server(tiny_model_path, datastore_flags(datastores))
