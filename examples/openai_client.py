"""An unchanged OpenAI client talking to SGLang with sglang-ilsi.

Start a server first, e.g.::

    sglang-ilsi serve --model-path MODEL --device cpu --port 30000

then ``python examples/openai_client.py http://127.0.0.1:30000 MODEL``.
"""

import sys

import openai

base_url, model = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base_url + "/v1", api_key="unused")
messages = [{"role": "user", "content": "Write a haiku about the sea."}]

# A method chosen with extra_body ...
resp = client.chat.completions.create(
    model=model, messages=messages, max_tokens=48, temperature=0.8,
    extra_body={"custom_params": {"ilsi": {"method": "typical", "mass": 0.9}}},
)
print(resp.choices[0].message.content)
print("ilsi:", resp.model_extra["ilsi"])

# ... or with the model-name suffix, for clients that cannot send extra fields.
resp = client.chat.completions.create(model=model + "+mirostat", messages=messages, max_tokens=48)
print(resp.choices[0].message.content)
print("ilsi:", resp.model_extra["ilsi"]["method"], resp.model_extra["ilsi"]["cost"])
