"""A tiny Llama-style model built offline by our code, for tests and the demo.

No model hub is reachable here, so tests need a model that our code can make
in seconds: a byte-level BPE tokenizer trained with ``tokenizers`` on text
from Python's standard library, and a randomly initialised
``LlamaForCausalLM`` saved as an ordinary Hugging Face folder that SGLang and
transformers both load. Weights are float32 and drawn with a wide
initialisation so next-token distributions are peaked: greedy outputs are
then stable across batch shapes, which exactness tests rely on.

The folder is deterministic for a given seed and cached under the user cache
directory; it is written to a temporary folder first and renamed into place,
so an interrupted build never leaves a half-written model behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import sysconfig
from pathlib import Path

from sglang_ilsi.cache import building, cache_root

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# Bump when the recipe changes, so stale caches are not reused.
RECIPE_VERSION = 2


def _corpus_files(limit: int) -> list[Path]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in stdlib.glob("*.py") if p.stat().st_size < 200_000)
    return files[:limit]


def _train_tokenizer(vocab_size: int, out_dir: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    texts = [p.read_text(encoding="utf-8", errors="replace") for p in _corpus_files(120)]
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        unk_token="<|endoftext|>",
        pad_token="<|endoftext|>",
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out_dir)


def build(
    out_dir: str | os.PathLike,
    *,
    seed: int = 0,
    vocab_size: int = 512,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int = 128,
    init_std: float = 0.3,
) -> Path:
    """Build the tokenizer and model into ``out_dir`` (overwrites)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _train_tokenizer(vocab_size, out)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=1024,
        rms_norm_eps=1e-6,
        initializer_range=init_std,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        torch_dtype="float32",
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(torch.float32)
    model.save_pretrained(out, safe_serialization=True)
    (out / "sglang_ilsi_recipe.json").write_text(
        json.dumps({"recipe": RECIPE_VERSION, "seed": seed, "kind": "tiny-llama"})
    )
    return out


def cached_path(seed: int = 0, **overrides) -> Path:
    """Where :func:`ensure` keeps the model for these arguments (built or not)."""
    key = hashlib.sha256(
        json.dumps({"recipe": RECIPE_VERSION, "seed": seed, **overrides}, sort_keys=True).encode()
    ).hexdigest()[:12]
    return cache_root() / "models" / f"tiny-llama-{key}"


def is_built(seed: int = 0, **overrides) -> bool:
    return (cached_path(seed, **overrides) / "sglang_ilsi_recipe.json").is_file()


def ensure(seed: int = 0, **overrides) -> Path:
    """Return the cached tiny model folder for ``seed``, building it if needed."""
    final = cached_path(seed, **overrides)
    if (final / "sglang_ilsi_recipe.json").is_file():
        return final
    with building(final) as tmp:
        build(tmp, seed=seed, **overrides)
    return final
