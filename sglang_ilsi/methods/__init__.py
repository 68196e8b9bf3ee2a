"""The built-in catalog, by survey family: one file per method, of every kind.

Logits methods (``sampling/``, ``constrained/``, ``contrastive/``,
``disturbed_prompt/``, ``model_aided/``), selection rules (``selection/``), the
tool loop (``tool_use/``) and speculative algorithms (``speculative/``). Methods
are pure PyTorch/Python and never import SGLang. Each registers itself with
:func:`sglang_ilsi.registry.register`; the registry imports every module here,
so a new method is one new file.
"""
