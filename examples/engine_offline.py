"""The offline ``sglang.Engine`` with sglang-ilsi (enabled by environment).

``SGLANG_ILSI=1 python examples/engine_offline.py MODEL [--device cpu]``
"""

import sys

import sglang as sgl

if __name__ == "__main__":  # SGLang spawns processes: keep this guard
    kwargs = {"device": "cpu"} if "--device" in sys.argv else {}
    engine = sgl.Engine(model_path=sys.argv[1], log_level="warning", **kwargs)
    try:
        out = engine.generate(
            "def fibonacci(n):",
            {"max_new_tokens": 16, "temperature": 0.8,
             "custom_params": {"ilsi": {"method": "eta", "epsilon": 0.001}}},
        )
        print(out["text"])
        print(out["meta_info"]["ilsi"])
    finally:
        engine.shutdown()
