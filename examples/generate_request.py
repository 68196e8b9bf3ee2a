"""SGLang's native ``/generate`` with a method and a per-token trace.

``python examples/generate_request.py http://127.0.0.1:30000``
"""

import json
import sys

import requests

base_url = sys.argv[1]
body = {
    "text": "The capital of France is",
    "sampling_params": {
        "max_new_tokens": 16,
        "temperature": 0.7,
        "custom_params": {"ilsi": {"method": "penalty_decoding", "penalty": 1.5, "trace": 3}},
    },
}
out = requests.post(base_url + "/generate", json=body, timeout=120).json()
print(out["text"])
print(json.dumps(out["meta_info"]["ilsi"], indent=2))
print("first step before/after:", out["meta_info"]["ilsi_trace"][0])
