"""An SGLang frontend program using sglang-ilsi's primitives.

Start a server (``sglang-ilsi serve --model-path MODEL --device cpu --port 30000``),
then ``python examples/frontend_program.py http://127.0.0.1:30000``.
"""

import sys

import sglang as sgl

from sglang_ilsi import lang


@sgl.function
def solve(s, question):
    s += f"Question: {question}\nAnswer step by step, then write #### and the number.\n"
    # 8 branches forked client-side (prefix shared by the radix cache), majority vote:
    lang.self_consistency(s, "answer", n=8, max_tokens=96, extractor="hash_marker")
    s += "\nIn one sentence:"
    # MBR over 6 candidates with chrF:
    lang.mbr_gen(s, "summary", n=6, max_tokens=32)
    s += "\nA title:"
    # a selection run entirely inside the server (needs the plugin): one call, one prefill
    lang.ilsi_gen(s, "title", "mbr", n=8, max_tokens=12)


if __name__ == "__main__":
    sgl.set_default_backend(sgl.RuntimeEndpoint(sys.argv[1]))
    state = solve.run(question="Tom has 3 apples and buys 4 more. How many apples does he have?")
    print(state.text())
    print("votes:", state["answer_ilsi"]["selection"])
