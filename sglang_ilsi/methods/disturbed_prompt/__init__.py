"""Context-aware methods that contrast the target's distribution with the
same model's distribution on a disturbed prompt (the second context)."""
