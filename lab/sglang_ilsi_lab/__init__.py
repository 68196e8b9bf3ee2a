"""The offline lab of sglang-ilsi: bench harness, seeded data, model preparation
and training, the lab models, the demo. Not needed to serve."""
