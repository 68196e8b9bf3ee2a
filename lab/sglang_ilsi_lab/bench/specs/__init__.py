"""Built-in bench specs, one module per family; every module here is imported
by :func:`sglang_ilsi_lab.bench.spec.load`, so a new family adds a file, not an edit."""
