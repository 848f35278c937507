"""The HTTP door: security headers and CSRF origin check, request ids, fail-closed audit, the routers."""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio.to_thread
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi.telemetry import TelemetryConfig
from sqlalchemy import text
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rempart import __version__, portal
from rempart.api import oauth
from rempart.audit import routes as audit_routes
from rempart.audit.log import AuditUnavailable
from rempart.care import pages as care_pages
from rempart.care import routes as care_routes
from rempart.guard.ratelimit import RateLimited
from rempart.identity.permissions import Forbidden, StepUpRequired
from rempart.platform import Platform
from rempart.portal.routes import build_router

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self';"
    " form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)

MAX_BODY_BYTES = 256 * 1024  # the largest request a door takes (feeds are files, not requests)

HOME = """<!doctype html>
<html lang="fr"><head><meta charset="utf-8"><title>Rempart</title></head>
<body><main><h1>Rempart</h1>
<p>Plateforme de tiers payant pour l'assurance maladie complémentaire.</p>
<p><a href="/login">Se connecter avec une clé d'accès</a></p>
</main></body></html>"""


class SecurityHeaders:
    """Every request: a request id, the body size limit, the CSRF origin check for the cookie
    doors, and the security headers on every answer. A plain ASGI middleware: Starlette's
    `BaseHTTPMiddleware` runs each request through a task and memory streams of its own,
    about a tenth of a rights check's time."""

    def __init__(self, app: ASGIApp, origin: str) -> None:
        self.app = app
        self.origin = origin

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = audit_routes.new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id
        path: str = scope["path"]
        headers = Headers(scope=scope)
        # CSRF: a state-changing request must come from the portal's own origin (the session
        # cookie is SameSite=Strict as well).
        # (The OAuth, API and FHIR doors take no cookies: their callers prove a key on every request.)
        cookie_door = not path.startswith(("/oauth/", "/api/", "/fhir/"))
        declared = headers.get("content-length", "0")
        chunked = "transfer-encoding" in headers and "content-length" not in headers
        refusal: Response | None = None
        if chunked or not declared.isdigit() or int(declared) > MAX_BODY_BYTES:
            refusal = JSONResponse({"detail": f"request body too large (at most {MAX_BODY_BYTES} bytes)"}, 413)
        elif cookie_door and scope["method"] not in ("GET", "HEAD", "OPTIONS") and headers.get("origin") != self.origin:
            refusal = JSONResponse({"detail": "cross-origin request refused"}, status_code=403)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                answer = MutableHeaders(scope=message)
                answer["Content-Security-Policy"] = CSP
                answer["X-Content-Type-Options"] = "nosniff"
                # same-origin, not no-referrer: under no-referrer a browser sends "Origin: null"
                # with a form's POST, and the CSRF check above would refuse the portal's own forms.
                answer["Referrer-Policy"] = "same-origin"
                answer["Strict-Transport-Security"] = "max-age=63072000; includeSubDomains"
                answer["Cross-Origin-Opener-Policy"] = "same-origin"
                answer["X-Request-ID"] = request_id
                if not path.startswith("/static/"):
                    answer["Cache-Control"] = "no-store"
            await send(message)

        if refusal is not None:
            await refusal(scope, receive, send_with_headers)
        else:
            await self.app(scope, receive, send_with_headers)


def _deliver_outbox(platform: Platform, stop: threading.Event) -> None:
    """Every 30 seconds, send what waits in the outbox (failures are retried next round)."""
    from rempart.registry import outbox

    mailer = outbox.SmtpMailer(platform.settings)
    log = logging.getLogger("rempart.outbox")
    while not stop.wait(30):
        try:
            with platform.session() as session:
                outbox.deliver(session, platform.keystore, sender=platform.settings.smtp_sender, mailer=mailer,
                               audit=platform.audit.for_platform("outbox"), on_error=log.warning)  # fmt: skip
        except Exception as exc:
            log.warning("outbox round failed: %s", type(exc).__name__)


def create_app(platform: Platform) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        platform.audit.log.start()  # staged events are sequenced within a fraction of a second
        # A few threads per process, not anyio's 40: Python threads share one interpreter lock,
        # and forty of them contending for it serve fewer requests than eight (more processes
        # are the way to more cores: `rempart serve --workers`).
        anyio.to_thread.current_default_thread_limiter().total_tokens = platform.settings.http_threads
        stop = threading.Event()
        if platform.settings.smtp_host:
            threading.Thread(target=_deliver_outbox, args=(platform, stop), name="outbox", daemon=True).start()
        yield
        stop.set()

    # FastAPI's own OpenTelemetry off: Rempart exports no traces, and asking on every request
    # whether a provider is configured costs the event loop ~2% of a rights check.
    no_telemetry: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}
    app = FastAPI(title="Rempart", version=__version__, docs_url="/docs", redoc_url=None, lifespan=lifespan,
                  telemetry=no_telemetry)  # fmt: skip

    app.add_middleware(SecurityHeaders, origin=platform.settings.portal_origin)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        # Which field and why, never the value given (it may be a NIR or a birth date).
        problems = [
            {"field": ".".join(str(part) for part in error.get("loc", ()) if part != "body"), "reason": error["msg"]}
            for error in exc.errors()
        ]
        return JSONResponse({"error": "invalid_request", "problems": problems}, status_code=422)

    @app.exception_handler(RateLimited)
    async def too_many(request: Request, exc: RateLimited) -> Response:
        return JSONResponse(
            {"detail": "too many requests"}, status_code=429, headers={"Retry-After": str(exc.retry_after)}
        )

    # The service layer decides who may do what; every door answers its refusals the same way.
    @app.exception_handler(StepUpRequired)
    async def step_up(request: Request, exc: StepUpRequired) -> Response:
        return JSONResponse({"detail": "step_up_required"}, status_code=403)

    @app.exception_handler(Forbidden)
    async def forbidden(request: Request, exc: Forbidden) -> Response:
        return JSONResponse({"detail": str(exc)}, status_code=403)

    @app.exception_handler(AuditUnavailable)
    async def unaudited(request: Request, exc: AuditUnavailable) -> Response:
        # Fail closed: what could not be recorded is not returned.
        return JSONResponse({"detail": "the audit log is unavailable: nothing was returned"}, status_code=503)

    # Routes are matched in order, one by one: the door practice software calls all day first.
    app.include_router(care_routes.build_router(platform))
    app.include_router(oauth.build_router(platform))
    app.include_router(build_router(platform))
    app.include_router(audit_routes.build_router(platform))
    app.include_router(care_pages.build_router(platform))
    app.mount("/static", StaticFiles(directory=Path(portal.__file__).parent / "static"), name="static")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def home() -> str:
        return HOME

    if platform.settings.bench_endpoints:

        @app.get("/bench/ceiling", include_in_schema=False)
        def bench_ceiling() -> JSONResponse:
            """The framework and database ceiling bench/eligibility.py compares checks with: one
            indexed SELECT, no authentication, no audit (off unless REMPART_BENCH_ENDPOINTS)."""
            with platform.engine.connect() as conn:
                found = conn.execute(
                    text("SELECT id FROM beneficiaries WHERE card_bidx = :bidx LIMIT 1"),
                    {"bidx": secrets.randbelow(1 << 20)},
                ).first()
            return JSONResponse({"found": found is not None})

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


def worker_app() -> FastAPI:
    """One server process's app when `rempart serve` runs several (uvicorn's factory): the
    parent process has migrated the database; each worker opens its own platform."""
    import gc

    from rempart.platform import open_platform

    app = create_app(open_platform(run_migrations=False))
    # What the process built to start (modules, the app, its routes, models and pools) lives as
    # long as it does: frozen out of the collector's reach, a full collection no longer walks
    # it on some request's time (those walks were the slowest requests' pauses).
    gc.collect()
    gc.freeze()
    return app
