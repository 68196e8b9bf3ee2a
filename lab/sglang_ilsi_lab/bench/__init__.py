"""``sglang-ilsi bench``: the effect and cost of every method, measured on one engine.

- :mod:`.spec`: task and method-row specs and their registries (extend by registering);
- :mod:`.specs`: the built-in tasks and rows, one module per family;
- :mod:`.runner`: plans the grid, runs it against SGLang servers, resumes;
- :mod:`.report`: results JSON, Markdown table, effect-vs-cost plot;
- :mod:`.evidence`: ``docs/evidence.md``, measured effects next to published ones.
"""
