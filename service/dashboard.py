"""The web dashboard: the static files in `service/ui/` at `/ui/`, with a strict Content-Security-Policy.

The files hold no data (every figure comes from the API, with the caller's key), so they are served without
a key; `/` redirects to `/ui/`.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

UI_DIR = Path(__file__).with_name("ui")

# Only this origin: no inline script or style, no third-party host. uPlot sizes its elements through
# element.style (CSSOM), which `style-src 'self'` allows.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "font-src 'self'",
        "form-action 'self'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    )
)

SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}


class DashboardFiles(StaticFiles):
    """StaticFiles that adds the security headers to every answer, errors included."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(SECURITY_HEADERS)
        return response


def mount_dashboard(app: FastAPI) -> None:
    """Serve the dashboard at `/ui/` and redirect `/` there."""

    @app.get("/", include_in_schema=False)
    def redirect_to_dashboard() -> RedirectResponse:
        return RedirectResponse("/ui/", status_code=307)

    app.mount("/ui", DashboardFiles(directory=UI_DIR, html=True), name="ui")
