"""Prompting programs (kind ``program``: no engine need, only the public API)."""
