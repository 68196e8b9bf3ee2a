"""What makes SGLang itself run on a CPU-only machine (kernel stand-ins, CPU
verify/draft attention and sampling)."""
