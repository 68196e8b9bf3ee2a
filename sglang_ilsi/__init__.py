"""sglang-ilsi: inference-time LLM self-improvement methods for SGLang.

Install the package and start SGLang with ``--ilsi`` (or run
``sglang-ilsi serve ...``); requests then choose a method by name with
``custom_params={"ilsi": {"method": "typical", ...}}`` or ``model="M+typical"``.
"""

__version__ = "0.1.0"
