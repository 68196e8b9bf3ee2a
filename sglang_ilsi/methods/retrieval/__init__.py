"""Retrieval methods: the next-token distribution is informed by a datastore
built from a corpus (``sglang-ilsi datastore build``, ``--ilsi-datastore``)."""
