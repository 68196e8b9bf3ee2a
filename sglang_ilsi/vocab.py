"""Same-vocabulary checks between a target model and an auxiliary one.

Methods that combine two models' next-token distributions (contrastive
decoding, DExperts, speculative drafts) index both by the same token ids, so
the two models must share the vocabulary: the same ``vocab_size`` in their
configs and, where both folders hold a tokenizer, the same token → id map.
"""

from __future__ import annotations

import json
import os


class VocabMismatch(ValueError):
    """The auxiliary model's vocabulary differs from the target's."""


def config_vocab_size(model_path: str) -> int | None:
    """``vocab_size`` from ``config.json`` (or its ``text_config``), None if absent."""
    path = os.path.join(model_path, "config.json")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        cfg = json.load(f)
    size = cfg.get("vocab_size")
    if size is None and isinstance(cfg.get("text_config"), dict):
        size = cfg["text_config"].get("vocab_size")
    return int(size) if size is not None else None


def _tokenizer_vocab(model_path: str) -> dict[str, int] | None:
    if not any(
        os.path.isfile(os.path.join(model_path, f))
        for f in ("tokenizer.json", "tokenizer_config.json", "vocab.json")
    ):
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_path).get_vocab()


def check_same_vocab(target_path: str, aux_path: str) -> None:
    """Raise :class:`VocabMismatch` saying what differs."""
    target_size, aux_size = config_vocab_size(target_path), config_vocab_size(aux_path)
    if aux_size is None:
        raise VocabMismatch(f"{aux_path} has no config.json with a vocab_size")
    if target_size is not None and target_size != aux_size:
        raise VocabMismatch(
            f"vocabulary size {aux_size} differs from the target's {target_size}; "
            "the auxiliary model must use the target's tokenizer"
        )
    target_vocab, aux_vocab = _tokenizer_vocab(target_path), _tokenizer_vocab(aux_path)
    if target_vocab is not None and aux_vocab is not None and target_vocab != aux_vocab:
        differing = sorted(set(target_vocab.items()) ^ set(aux_vocab.items()))[:3]
        raise VocabMismatch(
            f"tokenizer differs from the target's (e.g. {differing}); the auxiliary "
            "model must use the target's tokenizer"
        )
