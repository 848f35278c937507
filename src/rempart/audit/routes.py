"""The audit's doors on HTTP: checkpoints and proofs for auditors (operators, insurers' staff,
security officers, the DPO), and the "who accessed my data?" page. Thin: parse, call the
service, render. Identifiers of a person travel in POST bodies, never in a URL."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Form, HTTPException, Query, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from sqlalchemy.orm import Session

from rempart.audit import service as audit
from rempart.audit import subject_access
from rempart.identity import service as identity
from rempart.identity.permissions import Permission, check
from rempart.platform import Platform

SESSION_COOKIE = "rempart_session"
PAGES = Jinja2Templates(directory=Path(__file__).parents[1] / "portal" / "templates")


def request_context(request: Request, user: identity.CurrentUser) -> audit.RequestContext:
    return user.audit_context(
        ip=request.client.host if request.client else None, request_id=getattr(request.state, "request_id", None)
    )


def build_router(platform: Platform) -> APIRouter:
    router = APIRouter()
    settings = platform.settings

    def db() -> Iterator[Session]:
        with platform.session() as session:
            yield session

    def user_of(request: Request, session: Session) -> identity.CurrentUser | None:
        user = identity.authenticate(session, settings, token=request.cookies.get(SESSION_COOKIE))
        session.commit()
        return user

    def auditor(request: Request, session: Session) -> identity.CurrentUser:
        user = user_of(request, session)
        if user is None:
            raise HTTPException(status_code=401, detail="not logged in")
        check(user, Permission.AUDIT_PROOFS)
        return user

    @router.get("/api/v1/audit/checkpoint", tags=["audit"], response_class=PlainTextResponse)
    def latest_checkpoint(request: Request, session: Session = Depends(db)) -> Response:
        """The latest signed checkpoint (C2SP signed note): keep a copy, compare later."""
        auditor(request, session)
        latest = audit.latest_checkpoint(session)
        if latest is None:
            raise HTTPException(status_code=404, detail="no checkpoint yet")
        return PlainTextResponse(latest[1])

    @router.get("/api/v1/audit/checkpoints", tags=["audit"])
    def all_checkpoints(
        request: Request, since: Annotated[int, Query(ge=0)] = 0, session: Session = Depends(db)
    ) -> JSONResponse:
        """Every kept checkpoint from tree size `since` on (at most 1,000), for an auditor
        catching up: keep them all, each later one must be consistent with the earlier ones."""
        auditor(request, session)
        kept = audit.checkpoints(session, since_size=since)[:1000]
        return JSONResponse([{"size": size, "note": note} for size, _, note in kept])

    @router.get("/api/v1/audit/key", tags=["audit"], response_class=PlainTextResponse)
    def verifier_key(request: Request, session: Session = Depends(db)) -> Response:
        """The verifier key of the checkpoints (`name+hash+key`)."""
        auditor(request, session)
        return PlainTextResponse(audit.verifier_key(session, platform.keystore, settings.audit_log_origin))

    @router.get("/api/v1/audit/proofs/inclusion", tags=["audit"])
    def inclusion(
        request: Request,
        seq: Annotated[int, Query(ge=0)],
        size: Annotated[int, Query(ge=1)],
        session: Session = Depends(db),
    ) -> JSONResponse:
        """Proof that event `seq` is in the tree of `size` events (RFC 9162). The event itself
        comes with it for the platform's own auditors; insurer staff get the proof only."""
        user = auditor(request, session)
        with_event = user.role != "insurer_staff"
        try:
            proof = audit.prove_inclusion(session, seq=seq, size=size, with_event=with_event)
        except LookupError as exc:
            raise HTTPException(status_code=404, detail=str(exc)) from None
        subject = proof.subject() if with_event else None
        if subject is not None:  # an event about someone is itself an access to their file
            trail = platform.audit.for_request(request_context(request, user))
            trail.disclosed("audit.proof", purpose="audit", subjects=[subject], fields=("audit-event",))
        return JSONResponse(proof.as_json())

    @router.get("/api/v1/audit/proofs/consistency", tags=["audit"])
    def consistency(
        request: Request,
        size1: Annotated[int, Query(alias="from", ge=0)],
        size2: Annotated[int, Query(alias="to", ge=0)],
        session: Session = Depends(db),
    ) -> JSONResponse:
        """Proof that the tree of `to` events extends the tree of `from` events (RFC 9162)."""
        auditor(request, session)
        try:
            proof = audit.prove_consistency(session, size1=size1, size2=size2)
        except LookupError as exc:
            raise HTTPException(status_code=404, detail=str(exc)) from None
        return JSONResponse({"size1": size1, "size2": size2, "proof": [h.hex() for h in proof]})

    @router.get("/audit/subject", response_class=HTMLResponse, include_in_schema=False)
    def subject_page(request: Request, session: Session = Depends(db)) -> Response:
        user = user_of(request, session)
        if user is None:
            return RedirectResponse("/login", status_code=303)
        check(user, Permission.AUDIT_SUBJECT_ACCESS)
        return PAGES.TemplateResponse(request, "subject_access.html", {"title": "Qui a accédé à ces données ?"})

    @router.post("/audit/subject", include_in_schema=False)
    def subject_report(
        request: Request,
        birth_date: Annotated[dt.date, Form()],
        nir: Annotated[str, Form(max_length=15)] = "",
        amc_number: Annotated[str, Form(max_length=10)] = "",
        member_number: Annotated[str, Form(max_length=30)] = "",
        birth_rank: Annotated[int | None, Form(ge=1, le=9)] = None,
        format: Annotated[str, Form(pattern="^(html|json)$")] = "html",
        session: Session = Depends(db),
    ) -> Response:
        """The Article 15 answer for one person, as a page in French or as JSON."""
        user = user_of(request, session)
        if user is None:
            raise HTTPException(status_code=401, detail="not logged in")
        lookup = subject_access.SubjectLookup(
            nir=nir.strip() or None, birth_date=birth_date, amc_number=amc_number.strip() or None,
            member_number=member_number.strip() or None, birth_rank=birth_rank,
        )  # fmt: skip
        trail = platform.audit.for_request(request_context(request, user))
        try:
            with platform.data_session(user) as data:
                report = subject_access.article15_report(
                    session, data, platform.keystore, actor=user, lookup=lookup, audit=trail
                )
        except subject_access.NotFound:
            raise HTTPException(status_code=404, detail="no beneficiary matches these identifiers") from None
        except ValueError as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from None
        if format == "json":
            return JSONResponse(report.as_json())
        return HTMLResponse(report.as_html())

    return router


def new_request_id() -> str:
    return uuid.uuid4().hex
