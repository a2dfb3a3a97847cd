"""The playground page: ``GET /`` serves a chat page that shows each token's temperature as it streams.

The page (``server/static/``: one HTML file, one script, one style sheet; no build step, no CDN, so
it works offline) talks to this server only through its public API: ``/health`` for the model id,
``/ui/config`` for the tau range and the policy names, and streaming ``/v1/chat/completions``
(``logprobs: true``) for the text and its ``temperature_trace``. It colours tokens on the terminal
client's scale (``clients/render.py:tau_colour``; tests/test_playground.py pins the two together).

Routes (all off with ``ServerConfig.ui = False``, i.e. ``introllm serve --no-ui``):

- ``GET /`` the page; ``GET /ui/app.js``, ``GET /ui/style.css`` its script and style sheet.
- ``GET /ui/config`` ``{"tau_min", "tau_max", "policies"}``: the served head's range (the paper's
  [0.6, 1.5] when the model has no head or is still loading) and the valid policy names.

Colours: the terminal client's blue -> light grey -> red diverging scale (greedy: mid grey), the
shape of ColorBrewer's RdBu and Moreland's cool-warm maps. It was kept, rather than a sequential
map such as viridis, because tau has a natural middle (1.0, the model's own distribution) and the
question is "cooler or hotter than that"; and a blue-red diverging scale survives the common
colour-vision deficiencies: with protanopia or deuteranopia (no red-green axis) the ends read as
blue vs dark yellow, with tritanopia as cyan vs red, and lightness also changes along it.
tests/test_playground.py simulates all three (Machado et al. 2009) and checks that the ends and
every legend step stay apart and that the black text keeps WCAG AA contrast on every colour. The
update flag is a shape (a black bar before the token), not a colour, and every number is also
available as text (hover, or arrow keys in a focused reply).

None of these need the API key (they hold nothing secret); the page asks for the key and sends it
on ``/v1/*`` only. Responses carry a Content-Security-Policy that allows scripts, styles and
connections to this origin only.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse, JSONResponse

from .config import ServerConfig

STATIC = Path(__file__).with_name("static")

# name under /ui/ -> media type; nothing else in static/ is served.
ASSETS = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}

_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
}

# The paper's range (section 4, B.1), used when the served model has no head.
_DEFAULT_TAU = (0.6, 1.5)


def ui_router(app: FastAPI) -> APIRouter:
    """The page's routes. ``app.state.introllm`` (server.app.ServerState) supplies the tau range."""
    from introllm.sampler.policies import policy_names

    router = APIRouter()

    @router.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8", headers=_HEADERS)

    @router.get("/ui/config", include_in_schema=False)
    async def ui_config():
        state = app.state.introllm
        head = state.engine.head if state.ready and state.engine is not None else None
        tau_min, tau_max = (head.config.tau_min, head.config.tau_max) if head is not None else _DEFAULT_TAU
        return JSONResponse(
            {"tau_min": tau_min, "tau_max": tau_max, "policies": policy_names(), "head": head is not None},
            headers={"Cache-Control": "no-cache"},
        )

    for name, media_type in ASSETS.items():
        router.add_api_route(f"/ui/{name}", _asset(STATIC / name, media_type), methods=["GET"], include_in_schema=False)
    return router


def _asset(path: Path, media_type: str):
    async def asset():
        return FileResponse(path, media_type=media_type, headers=_HEADERS)

    return asset


def add_ui(app: FastAPI, config: ServerConfig) -> None:
    """Serve the playground on ``app`` unless ``config.ui`` is False (then ``/`` is a 404)."""
    if config.ui:
        app.include_router(ui_router(app))
