"""Contrastive and anti-degeneration decoding (repetition, incoherence)."""
