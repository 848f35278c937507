"""The HTTP door. This issue serves a placeholder home page and a health check."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from sqlalchemy import text

from rempart import __version__
from rempart.platform import Platform

HOME = """<!doctype html>
<html lang="fr"><head><meta charset="utf-8"><title>Rempart</title></head>
<body><main><h1>Rempart</h1>
<p>Plateforme de tiers payant pour l'assurance maladie complémentaire.</p>
<p>Les services aux professionnels de santé et aux organismes arrivent bientôt.</p>
</main></body></html>"""


def create_app(platform: Platform) -> FastAPI:
    app = FastAPI(title="Rempart", version=__version__, docs_url="/docs", redoc_url=None)

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        response.headers["Content-Security-Policy"] = "default-src 'none'; frame-ancestors 'none'"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def home() -> str:
        return HOME

    @app.get("/healthz")
    def healthz() -> JSONResponse:
        """Database reachable and key provider readable."""
        try:
            with platform.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            database = "ok"
        except Exception:
            database = "unavailable"
        status = 200 if database == "ok" else 503
        return JSONResponse({"status": "ok" if status == 200 else "degraded", "database": database}, status_code=status)

    return app
