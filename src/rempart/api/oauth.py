"""The OAuth token endpoint for practice software, what every DPoP-protected call sends (read
once, documented once), and the first DPoP-protected API route."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Header, Request
from fastapi.responses import JSONResponse

from rempart.identity import apiclients
from rempart.platform import Platform


def refused(error: apiclients.InvalidClient) -> JSONResponse:
    """An OAuth or API call refused: 401 with a DPoP challenge for token problems, else 400."""
    status = 401 if error.error in ("invalid_token", "invalid_dpop_proof") else 400
    headers = {"WWW-Authenticate": f'DPoP error="{error.error}"'} if status == 401 else {}
    return JSONResponse({"error": error.error}, status_code=status, headers=headers)


def target_path(request: Request) -> str:
    """The path as the client sent it, percent-encodings kept: what its DPoP proof signed
    (Starlette's `request.url.path` is decoded, and an encoded `/` would read as a separator)."""
    raw_path = request.scope.get("raw_path")
    return raw_path.decode("latin-1") if raw_path else request.url.path


@dataclass(frozen=True)
class Proof:
    """What practice software sends on every call: its DPoP-bound token, a fresh proof of the
    key, and the RPPS of the establishment's professional it acts for."""

    authorization: str | None
    dpop: str | None
    acting_rpps: str | None


async def proof_of(request: Request) -> Proof:
    """The three headers, read straight from the request on the event loop. As FastAPI header
    parameters each cost every call its own lookup and validation (~0.1 ms a call in all), so
    they are documented by hand (PROOF_HEADERS); a plain `def` dependency would cost a trip
    through the thread pool."""
    headers = request.headers
    dpop = headers.get("dpop")
    return Proof(headers.get("authorization"), dpop if dpop is None or len(dpop) <= MAX_PROOF else "",
                 headers.get("x-acting-rpps"))  # fmt: skip


MAX_PROOF = 4000  # characters: a proof longer than this is refused as invalid
PROOF_HEADERS: dict[str, Any] = {"parameters": [
    {"name": "Authorization", "in": "header", "required": True, "description": "`DPoP ` and the access token",
     "schema": {"type": "string"}},
    {"name": "DPoP", "in": "header", "required": True, "description": "a fresh DPoP proof (RFC 9449)",
     "schema": {"type": "string", "maxLength": MAX_PROOF}},
    {"name": "X-Acting-RPPS", "in": "header", "required": True,
     "description": "the RPPS of the establishment's professional the call acts for",
     "schema": {"type": "string", "maxLength": 11}},
]}  # fmt: skip


def build_router(platform: Platform) -> APIRouter:
    router = APIRouter()
    origin = platform.settings.portal_origin

    @router.post("/oauth/token", tags=["oauth"])
    def token(
        grant_type: Annotated[str, Form()],
        client_assertion_type: Annotated[str, Form()],
        client_assertion: Annotated[str, Form(max_length=4000)],
        scope: Annotated[str, Form(max_length=200)] = "",
        dpop: Annotated[str | None, Header(max_length=4000)] = None,
    ) -> JSONResponse:
        """Client credentials with `private_key_jwt`; the access token is bound to the DPoP key."""
        with platform.session() as session:
            try:
                issued = apiclients.issue_token(
                    session, token_url=f"{origin}/oauth/token", grant_type=grant_type,
                    client_assertion_type=client_assertion_type, client_assertion=client_assertion, scope=scope,
                    dpop_proof=dpop,
                )  # fmt: skip
            except apiclients.InvalidClient as error:
                session.commit()  # spent jtis stay spent
                return refused(error)
            session.commit()
        return JSONResponse(
            {"access_token": issued.access_token, "token_type": "DPoP", "expires_in": issued.expires_in,
             "scope": issued.scope},
            headers={"Cache-Control": "no-store"},
        )  # fmt: skip

    @router.get("/api/v1/whoami", tags=["api"], openapi_extra=PROOF_HEADERS)
    def whoami(request: Request, proof: Annotated[Proof, Depends(proof_of)]) -> JSONResponse:
        """Who the platform thinks is calling: client, establishment, scopes, acting professional."""
        with platform.session() as session:
            try:
                caller = apiclients.authenticate_call(
                    session, platform.keystore, authorization=proof.authorization, dpop_proof=proof.dpop,
                    method="GET", url=origin + target_path(request), acting_for=proof.acting_rpps,
                )  # fmt: skip
            except apiclients.InvalidClient as error:
                session.commit()
                return refused(error)
            session.commit()
        return JSONResponse(
            {"client": str(caller.client_id), "establishment": str(caller.establishment_id),
             "scopes": list(caller.scopes), "acting_for": caller.acting_professional}
        )  # fmt: skip

    return router
