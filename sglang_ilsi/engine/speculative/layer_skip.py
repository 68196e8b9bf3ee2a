"""The draft of self-speculative decoding: the target with chosen layers skipped.

Zhang et al. 2024, *Draft & Verify: Lossless Large Language Model
Acceleration via Self-Speculative Decoding*: the draft is the target model
itself with some decoder layers skipped. A skipped pre-norm decoder layer is
the identity on the residual stream (``h_{l+1} = h_l``), so "the target with
layers S skipped" is exactly a model of the same architecture whose layers are
the target's layers not in S, in order, with the same embeddings, final norm
and LM head. :func:`derive` writes that model as a Hugging Face folder, read
straight from the target's safetensors (no model is instantiated), so that
SGLang's own draft-model speculative worker can serve it.

The paper picks S by Bayesian optimisation on a small set; :func:`default_skip`
is a fixed rule instead (every other layer, first and last kept), operators
choose S with ``--ilsi-self-spec-skip``, and ``sglang-ilsi self-spec-search``
(``sglang-ilsi self-spec-search``, in the lab) proposes one. The derived weights are a copy: the
draft does not share the target's weight memory.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

from sglang_ilsi.cache import building, cache_root
from sglang_ilsi.methods.speculative.self_speculative import check_skip, num_layers

MARKER = "sglang_ilsi_layer_skip.json"
_LAYER_KEY = re.compile(r"^(model\.layers\.)(\d+)(\..*)$")
_WEIGHT_FILES = ("*.safetensors", "*.safetensors.index.json", "*.bin", "*.bin.index.json", "*.pt")


def derived_path(target: Path, skip: Sequence[int]) -> Path:
    target = Path(target).resolve()
    stamp = [(p.name, p.stat().st_size, int(p.stat().st_mtime))
             for p in sorted(target.glob("*.safetensors"))]
    key = hashlib.sha256(json.dumps(
        {"target": str(target), "weights": stamp, "skip": list(skip)}).encode()).hexdigest()[:12]
    return cache_root() / "self-spec" / f"{target.name}-skip{len(skip)}-{key}"


def derive(target: Path, skip: Sequence[int]) -> Path:
    """The target without layers ``skip``, as a cached Hugging Face folder."""
    from safetensors.torch import load_file, save_file

    target = Path(target)
    layers = num_layers(target)
    skip = check_skip(skip, layers)
    final = derived_path(target, skip)
    if (final / MARKER).is_file():
        return final
    weights = sorted(target.glob("*.safetensors"))
    if not weights:
        raise ValueError(f"{target}: self-speculative drafts need safetensors weights")
    keep = [i for i in range(layers) if i not in skip]
    new_index = {old: new for new, old in enumerate(keep)}
    with building(final) as tmp:
        state = {}
        for path in weights:
            for name, tensor in load_file(str(path)).items():
                match = _LAYER_KEY.match(name)
                if match is None:
                    state[name] = tensor
                elif int(match.group(2)) in new_index:
                    state[f"{match.group(1)}{new_index[int(match.group(2))]}{match.group(3)}"] = (
                        tensor)
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        config = json.loads((target / "config.json").read_text())
        config["num_hidden_layers"] = len(keep)
        for key in ("layer_types",):  # per-layer lists follow the kept layers
            if isinstance(config.get(key), list) and len(config[key]) == layers:
                config[key] = [config[key][i] for i in keep]
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        for path in target.iterdir():
            if path.is_file() and path.name != "config.json" and not any(
                    path.match(pattern) for pattern in _WEIGHT_FILES):
                shutil.copy2(path, tmp / path.name)
        (tmp / MARKER).write_text(json.dumps(
            {"target": str(target.resolve()), "target_layers": layers, "skipped": list(skip),
             "kept": keep}, indent=2))
    return final
