"""Our HTTP routes on SGLang's FastAPI app: ``GET /ilsi/methods`` (the catalog,
with this server's availability), ``GET /ilsi/methods/{name}`` (one card;
404 naming the closest names), and ``GET /ilsi/reward`` / ``POST /ilsi/reward``
(the reward models this server uses; scoring with one it serves, for a server
that names this one with ``--ilsi-reward-url``).

:func:`before_http_server` is a BEFORE hook on SGLang's
``_setup_and_run_http_server`` (``engine/patches.py``): the main process calls
it once, with the tokenizer manager, just before the app starts serving; it
adds the routes and checks that a request to them reaches them (no SGLang
route in front matches the path), or stops the launch; and it loads the local
reward models now, logging the memory each takes (a folder whose weights do not
load stops the launch).
"""

from __future__ import annotations

import logging
from typing import Any

from sglang_ilsi.reward import REWARD_PATH

logger = logging.getLogger(__name__)

METHODS_PATH = "/ilsi/methods"
METHOD_PATH = METHODS_PATH + "/{name}"


def catalog_routes(tokenizer_manager: Any) -> list[tuple[str, Any]]:
    """``(path, endpoint)`` for each of our routes, bound to this server."""
    from fastapi.responses import JSONResponse

    from sglang_ilsi import catalog
    from sglang_ilsi.engine.http import api

    def tokenizer() -> Any:
        return getattr(tokenizer_manager, "tokenizer", None)

    async def list_methods() -> JSONResponse:
        return JSONResponse(catalog.catalog(api.config(), tokenizer()))

    async def one_method(name: str) -> JSONResponse:
        try:
            return JSONResponse(catalog.find(name, api.config(), tokenizer()))
        except KeyError as e:
            return JSONResponse({"error": e.args[0]}, status_code=404)

    return [(METHODS_PATH, list_methods), (METHOD_PATH, one_method)]


def reward_routes() -> list[tuple[str, str, Any]]:
    """``(method, path, endpoint)`` of the reward-model routes."""
    from fastapi.responses import JSONResponse

    from sglang_ilsi.engine.http import api, reward_service
    from sglang_ilsi.errors import IlsiRequestError

    async def list_reward_models() -> JSONResponse:
        return JSONResponse(reward_service.listing(api.config()))

    async def score(request: Any) -> JSONResponse:  # a plain Starlette route: the request
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse({"error": "expected a JSON body"}, status_code=400)
        try:
            return JSONResponse(await reward_service.score_for_client(api.config(), body))
        except IlsiRequestError as e:
            return JSONResponse({"error": str(e)}, status_code=400)

    return [("GET", REWARD_PATH, list_reward_models), ("POST", REWARD_PATH, score)]


def add_routes(app: Any, routes: list[tuple[str, Any]] | list[tuple[str, str, Any]]) -> None:
    """Add ``routes`` (``(path, endpoint)`` for GET, or ``(method, path, endpoint)``)
    to ``app``; SystemExit if a route already in ``app`` would answer one of
    their paths first."""
    full = [r if len(r) == 3 else ("GET", *r) for r in routes]
    for method, path, endpoint in full:
        if method == "GET":
            app.add_api_route(path, endpoint, methods=[method], include_in_schema=True)
        else:  # the endpoint reads the body itself
            app.add_route(path, endpoint, methods=[method])
    for method, path, endpoint in full:
        probe = path.replace("{name}", "typical")
        first = _first_match(app, probe, method)
        if getattr(first, "endpoint", None) is not endpoint:
            raise SystemExit(f"sglang-ilsi: {method} {probe} would be answered by SGLang's "
                             f"{getattr(first, 'path', first)!r}, not the plugin's route")


def _first_match(app: Any, path: str, method: str = "GET") -> Any:
    from starlette.routing import Match

    scope = {"type": "http", "path": path, "method": method, "root_path": ""}
    for route in app.router.routes:
        match, _ = route.matches(scope)
        if match == Match.FULL:
            return route
    return None


def before_http_server(server_args: Any, tokenizer_manager: Any, *args: Any,
                       **kwargs: Any) -> None:
    """BEFORE hook on ``sglang.srt.entrypoints.http_server._setup_and_run_http_server``."""
    from sglang.srt.entrypoints import http_server

    from sglang_ilsi.engine.http import api, reward_service

    add_routes(http_server.app, catalog_routes(tokenizer_manager))
    add_routes(http_server.app, reward_routes())
    for line in reward_service.load_local(api.config()):
        logger.info(line)
