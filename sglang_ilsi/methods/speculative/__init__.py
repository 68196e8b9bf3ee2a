"""Speculative algorithms (kind ``speculative``, need ``draft``): declarations only.

Each file declares one algorithm a server runs with ``--speculative-algorithm``:
its paper, family and launch flags. SGLang's own (``STANDALONE``, ``NGRAM``) are
declared too, so the catalog lists everything a server can do. The workers live
in :mod:`sglang_ilsi.engine.speculative`. A request cannot choose one: naming it
is a 400 that says which launch flag enables it.
"""
