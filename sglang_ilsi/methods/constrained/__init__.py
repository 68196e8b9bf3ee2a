"""Constrained decoding: hard and soft lexical constraints on the next token."""
