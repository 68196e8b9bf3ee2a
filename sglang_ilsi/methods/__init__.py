"""The built-in method catalog, grouped by survey family (one file per method).

Methods are pure PyTorch and never import SGLang. ``catalog.py`` imports every
built-in so that it registers itself with :mod:`sglang_ilsi.registry`.
"""
