"""Scheduler side: the logits stage, companions (aux models, second contexts,
layer logits) and per-request batch state."""
