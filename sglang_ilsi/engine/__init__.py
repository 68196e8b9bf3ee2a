"""Capabilities: the engine glue that gives methods what they need inside
SGLang. Only this package touches SGLang internals; every touch point is
listed in :mod:`sglang_ilsi.engine.patches`."""
