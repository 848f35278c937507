"""Portal pages and the passkey ceremony endpoints. Thin: parse, call identity.service, render."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from rempart.guard import ratelimit
from rempart.identity import apiclients, federation, service
from rempart.identity.permissions import Permission, allowed
from rempart.platform import Platform
from rempart.registry import service as registry

SESSION_COOKIE = "rempart_session"
CEREMONY_COOKIE = "rempart_ceremony"
OIDC_COOKIE = "rempart_oidc"
TEMPLATES = Jinja2Templates(directory=Path(__file__).parent / "templates")


class RegisterOptionsIn(BaseModel):
    invitation: str = Field(min_length=20, max_length=100)


class RegisterIn(BaseModel):
    credential: dict[str, Any]
    name: str = Field(default="Clé d'accès", max_length=60)


class RecoverIn(BaseModel):
    code: str = Field(min_length=10, max_length=60)


class InvitationIn(BaseModel):
    role: str = Field(pattern="^(professional|establishment_admin)$")
    rpps: str | None = Field(default=None, pattern=r"^\d{11}$")


class LoginIn(BaseModel):
    credential: dict[str, Any]


class ApiClientIn(BaseModel):
    public_jwk: dict[str, Any]
    scopes: list[str] = Field(min_length=1, max_length=3)


def build_router(platform: Platform) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    settings = platform.settings

    def db() -> Iterator[Session]:
        with platform.session() as session:
            yield session

    def limited(limit: ratelimit.Limit) -> Callable[[Request], None]:
        def check(request: Request) -> None:
            with platform.session() as session:
                ratelimit.hit(session, limit, request.client.host if request.client else "unknown")

        return check

    login_limit = Depends(limited(ratelimit.LOGIN))
    enrol_limit = Depends(limited(ratelimit.ENROL))
    recovery_limit = Depends(limited(ratelimit.RECOVERY))

    def set_cookie(response: Response, name: str, value: str, max_age: int) -> None:
        response.set_cookie(name, value, max_age=max_age, httponly=True, secure=True, samesite="strict", path="/")

    def ceremony_reply(ceremony: str, options: str) -> Response:
        """WebAuthn options, with the single-use ceremony token in a short-lived cookie."""
        response = Response(options, media_type="application/json")
        set_cookie(response, CEREMONY_COOKIE, ceremony, service.CEREMONY_SECONDS)
        return response

    def failed() -> HTTPException:
        return HTTPException(status_code=400, detail="authentication failed")

    @router.get("/login", response_class=HTMLResponse)
    def login_page(request: Request) -> Response:
        return TEMPLATES.TemplateResponse(request, "login.html", {"title": "Connexion"})

    @router.get("/enrol", response_class=HTMLResponse)
    def enrol_page(request: Request) -> Response:
        return TEMPLATES.TemplateResponse(request, "enrol.html", {"title": "Activer mon compte"})

    @router.post("/auth/register/options", dependencies=[enrol_limit])
    def register_options(body: RegisterOptionsIn, session: Session = Depends(db)) -> Response:
        try:
            ceremony, options = service.begin_registration(session, settings, invitation_token=body.invitation)
        except service.AuthenticationFailed:
            raise failed() from None
        session.commit()
        return ceremony_reply(ceremony, options)

    @router.post("/auth/register/verify", dependencies=[enrol_limit])
    def register_verify(body: RegisterIn, request: Request, session: Session = Depends(db)) -> Response:
        try:
            created = service.finish_registration(
                session,
                settings,
                ceremony_token=request.cookies.get(CEREMONY_COOKIE),
                credential=json.dumps(body.credential),
                passkey_name=body.name,
            )
        except service.AuthenticationFailed:
            session.commit()  # keep the ceremony spent and the failure recorded
            raise failed() from None
        session.commit()
        return _logged_in(created.token)

    @router.post("/auth/login/options", dependencies=[login_limit])
    def login_options(session: Session = Depends(db)) -> Response:
        ceremony, options = service.begin_login(session, settings)
        session.commit()
        return ceremony_reply(ceremony, options)

    @router.post("/auth/login/verify", dependencies=[login_limit])
    def login_verify(body: LoginIn, request: Request, session: Session = Depends(db)) -> Response:
        try:
            created = service.finish_login(
                session,
                settings,
                ceremony_token=request.cookies.get(CEREMONY_COOKIE),
                credential=json.dumps(body.credential),
            )
        except service.AuthenticationFailed:
            session.commit()
            raise failed() from None
        session.commit()
        return _logged_in(created.token)

    def _logged_in(token: str) -> Response:
        response = JSONResponse({"redirect": "/account"})
        set_cookie(response, SESSION_COOKIE, token, settings.session_absolute_hours * 3600)
        response.delete_cookie(CEREMONY_COOKIE, path="/")
        return response

    @router.post("/auth/logout")
    def logout(request: Request, session: Session = Depends(db)) -> Response:
        service.logout(session, token=request.cookies.get(SESSION_COOKIE))
        session.commit()
        response = JSONResponse({"redirect": "/login"})
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    def current(request: Request, session: Session) -> service.CurrentUser:
        user = service.authenticate(session, settings, token=request.cookies.get(SESSION_COOKIE))
        session.commit()
        if user is None:
            raise HTTPException(status_code=401, detail="not logged in")
        return user

    @router.post("/auth/step-up/options")
    def step_up_options(request: Request, session: Session = Depends(db)) -> Response:
        user = current(request, session)
        ceremony, options = service.begin_step_up(session, settings, actor=user)
        session.commit()
        return ceremony_reply(ceremony, options)

    @router.post("/auth/step-up/verify")
    def step_up_verify(body: LoginIn, request: Request, session: Session = Depends(db)) -> Response:
        user = current(request, session)
        try:
            service.finish_step_up(
                session, settings, actor=user, ceremony_token=request.cookies.get(CEREMONY_COOKIE),
                credential=json.dumps(body.credential),
            )  # fmt: skip
        except service.AuthenticationFailed:
            session.commit()
            raise failed() from None
        session.commit()
        return JSONResponse({"ok": True})

    @router.post("/account/passkeys/options")
    def add_passkey_options(request: Request, session: Session = Depends(db)) -> Response:
        user = current(request, session)
        ceremony, options = service.begin_add_passkey(session, settings, actor=user)
        session.commit()
        return ceremony_reply(ceremony, options)

    @router.post("/account/passkeys/verify")
    def add_passkey_verify(body: RegisterIn, request: Request, session: Session = Depends(db)) -> Response:
        user = current(request, session)
        try:
            service.finish_add_passkey(
                session, settings, actor=user, ceremony_token=request.cookies.get(CEREMONY_COOKIE),
                credential=json.dumps(body.credential), name=body.name,
            )  # fmt: skip
        except service.AuthenticationFailed:
            session.commit()
            raise failed() from None
        session.commit()
        return JSONResponse({"redirect": "/account"})

    @router.post("/account/passkeys/{passkey_id}/revoke")
    def revoke_passkey(passkey_id: uuid.UUID, request: Request, session: Session = Depends(db)) -> Response:
        user = current(request, session)
        service.revoke_passkey(session, actor=user, passkey_id=passkey_id)
        session.commit()
        return JSONResponse({"redirect": "/account"})

    @router.post("/account/sessions/{session_id}/revoke")
    def revoke_one_session(session_id: str, request: Request, session: Session = Depends(db)) -> Response:
        user = current(request, session)
        service.revoke_session(session, actor=user, session_id=session_id)
        session.commit()
        return JSONResponse({"redirect": "/account"})

    @router.post("/account/sessions/revoke")
    def revoke_sessions(request: Request, session: Session = Depends(db)) -> Response:
        user = current(request, session)
        service.revoke_all_sessions(session, account_id=user.account_id, by=user.account_id)
        session.commit()
        response = JSONResponse({"redirect": "/login"})
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    @router.get("/auth/psc/start", dependencies=[login_limit])
    def psc_start(session: Session = Depends(db)) -> Response:
        """Log in with Pro Santé Connect (CPS card or e-CPS)."""
        try:
            state, url = federation.begin(session, settings)
        except service.AuthenticationFailed:
            raise failed() from None
        session.commit()
        response = RedirectResponse(url, status_code=303)
        # Lax, not Strict: the provider's redirect back is a cross-site navigation.
        response.set_cookie(OIDC_COOKIE, state, max_age=federation.FLOW_SECONDS, httponly=True, secure=True,
                            samesite="lax", path="/auth/psc/")  # fmt: skip
        return response

    @router.get("/auth/psc/callback", dependencies=[login_limit])
    def psc_callback(request: Request, state: str = "", code: str = "", session: Session = Depends(db)) -> Response:
        try:
            login = federation.finish(
                session, settings, platform.keystore, state_cookie=request.cookies.get(OIDC_COOKIE), state=state,
                code=code,
            )  # fmt: skip
        except service.AuthenticationFailed:
            session.commit()
            raise failed() from None
        session.commit()
        response = RedirectResponse("/account/establishment" if login.must_choose else "/account", status_code=303)
        set_cookie(response, SESSION_COOKIE, login.session.token, settings.session_absolute_hours * 3600)
        response.delete_cookie(OIDC_COOKIE, path="/auth/psc/")
        return response

    @router.get("/recover", response_class=HTMLResponse)
    def recover_page(request: Request) -> Response:
        return TEMPLATES.TemplateResponse(request, "recover.html", {"title": "Code de secours"})

    @router.post("/auth/recover/options", dependencies=[recovery_limit])
    def recover_options(body: RecoverIn, session: Session = Depends(db)) -> Response:
        try:
            ceremony, options = service.begin_recovery(session, settings, code=body.code)
        except service.AuthenticationFailed:
            session.commit()  # the refused attempt is recorded
            raise failed() from None
        session.commit()
        return ceremony_reply(ceremony, options)

    @router.post("/auth/recover/verify", dependencies=[recovery_limit])
    def recover_verify(body: RegisterIn, request: Request, session: Session = Depends(db)) -> Response:
        try:
            created = service.finish_recovery(
                session, settings, ceremony_token=request.cookies.get(CEREMONY_COOKIE),
                credential=json.dumps(body.credential), passkey_name=body.name,
            )  # fmt: skip
        except service.AuthenticationFailed:
            session.commit()
            raise failed() from None
        session.commit()
        return _logged_in(created.token)

    @router.post("/account/recovery-codes")
    def recovery_codes(request: Request, session: Session = Depends(db)) -> Response:
        user = current(request, session)
        codes = service.new_recovery_codes(session, actor=user)
        session.commit()
        return JSONResponse({"codes": codes})

    @router.post("/account/invitations")
    def invite(body: InvitationIn, request: Request, session: Session = Depends(db)) -> Response:
        """An establishment administrator invites a colleague of their establishment."""
        user = current(request, session)
        professional_id = None
        if body.role == "professional":
            found = registry.find_professional(session, platform.keystore, identifier=body.rpps or "")
            if found is None:
                raise HTTPException(status_code=400, detail="no professional with this RPPS")
            professional_id = found.id
        token = service.issue_invitation_as(
            session, settings, actor=user, role=body.role, professional_id=professional_id,
            establishment_id=user.establishment_id,
        )  # fmt: skip
        session.commit()
        return JSONResponse({"link": service.invitation_link(settings, token)})

    @router.get("/account/establishment", response_class=HTMLResponse)
    def establishment_page(request: Request, session: Session = Depends(db)) -> Response:
        user = service.authenticate(session, settings, token=request.cookies.get(SESSION_COOKIE))
        session.commit()
        if user is None:
            return RedirectResponse("/login", status_code=303)
        choices = service.establishment_choices(session, actor=user)
        return TEMPLATES.TemplateResponse(
            request, "establishment.html", {"title": "Choisir l'établissement", "choices": choices}
        )

    @router.post("/account/establishment/{establishment_id}")
    def choose(establishment_id: uuid.UUID, request: Request, session: Session = Depends(db)) -> Response:
        user = current(request, session)
        service.choose_establishment(session, actor=user, establishment_id=establishment_id)
        session.commit()
        return JSONResponse({"redirect": "/account"})

    def page_user(request: Request, session: Session) -> service.CurrentUser | None:
        user = service.authenticate(session, settings, token=request.cookies.get(SESSION_COOKIE))
        session.commit()
        return user

    @router.get("/account/api-clients", response_class=HTMLResponse)
    def api_clients_page(request: Request, session: Session = Depends(db)) -> Response:
        """The establishment administrator's practice software: register a key, revoke one."""
        user = page_user(request, session)
        if user is None:
            return RedirectResponse("/login", status_code=303)
        clients = apiclients.list_clients(session, actor=user)
        return TEMPLATES.TemplateResponse(
            request, "api_clients.html",
            {"title": "Logiciels de l'établissement", "clients": clients, "scopes": sorted(apiclients.SCOPES),
             "establishment": registry.establishment_name(session, user.establishment_id)},
        )  # fmt: skip

    @router.post("/account/api-clients")
    def register_api_client(body: ApiClientIn, request: Request, session: Session = Depends(db)) -> Response:
        user = current(request, session)
        if user.establishment_id is None:
            raise HTTPException(status_code=403, detail="no establishment")
        try:
            client_id = apiclients.register_client(
                session, actor=user, establishment_id=user.establishment_id, public_jwk=body.public_jwk,
                scopes=body.scopes,
            )  # fmt: skip
        except apiclients.InvalidClient:
            raise HTTPException(
                status_code=400, detail="public_jwk: an EC P-256 or Ed25519 public key in JWK form"
            ) from None
        session.commit()
        return JSONResponse({"client_id": str(client_id), "redirect": "/account/api-clients"})

    @router.post("/account/api-clients/{client_id}/revoke")
    def revoke_api_client(client_id: uuid.UUID, request: Request, session: Session = Depends(db)) -> Response:
        user = current(request, session)
        apiclients.revoke_client(session, actor=user, client_id=client_id)
        session.commit()
        return JSONResponse({"redirect": "/account/api-clients"})

    @router.get("/security/events", response_class=HTMLResponse)
    def security_events_page(request: Request, kind: str = "", session: Session = Depends(db)) -> Response:
        """Security officers and the DPO: every account's security events."""
        user = page_user(request, session)
        if user is None:
            return RedirectResponse("/login", status_code=303)
        events = service.all_security_events(session, actor=user, kind=kind[:40] or None)
        return TEMPLATES.TemplateResponse(
            request, "security_events.html", {"title": "Événements de sécurité", "events": events, "kind": kind[:40]}
        )

    @router.get("/account", response_class=HTMLResponse)
    def account(request: Request, session: Session = Depends(db)) -> Response:
        user = service.authenticate(session, settings, token=request.cookies.get(SESSION_COOKIE))
        session.commit()
        if user is None:
            return RedirectResponse("/login", status_code=303)
        if user.must_choose_establishment:
            return RedirectResponse("/account/establishment", status_code=303)
        page = service.account_page(session, account_id=user.account_id)
        notices = service.notices_for(session, account_id=user.account_id)
        can_invite = allowed(user, Permission.INVITE_IN_ESTABLISHMENT)
        return TEMPLATES.TemplateResponse(
            request,
            "account.html",
            {"title": "Mon compte", "page": page, "notices": notices, "can_invite": can_invite,
             "can_manage_clients": allowed(user, Permission.MANAGE_API_CLIENTS),
             "can_see_all_events": allowed(user, Permission.SECURITY_EVENTS_ALL),
             "can_answer_subjects": allowed(user, Permission.AUDIT_SUBJECT_ACCESS),
             "establishment": registry.establishment_name(session, user.establishment_id)},
        )  # fmt: skip

    return router
