"""Speculative algorithms registered with SGLang's speculative registry."""
