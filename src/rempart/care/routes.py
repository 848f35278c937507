"""Care on HTTP, the REST door: practice software (DPoP-bound tokens, acting for a professional
of its establishment). Thin: authenticate, parse, call the use case, render. Identifiers of a
person travel in request bodies, never in a URL."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse

from rempart.api.oauth import refused
from rempart.care import eligibility as rights
from rempart.care.caller import CareCaller
from rempart.care.schemas import EligibilityIn, EligibilityOut
from rempart.identity import apiclients
from rempart.platform import Platform


def input_refused(error: rights.CareInputError) -> JSONResponse:
    return JSONResponse({"error": "invalid_request", "field": error.field, "reason": error.reason}, status_code=422)


def build_router(platform: Platform) -> APIRouter:
    router = APIRouter()
    origin = platform.settings.portal_origin

    @router.post(
        "/api/v1/care/eligibility", tags=["care"], response_model=EligibilityOut,
        responses={401: {"description": "no valid DPoP-bound token"}, 422: {"description": "a field refused"},
                   429: {"description": "a quota is spent"}, 503: {"description": "the audit log is unavailable"}},
    )  # fmt: skip
    def eligibility(
        body: EligibilityIn,
        request: Request,
        authorization: Annotated[str | None, Header()] = None,
        dpop: Annotated[str | None, Header(max_length=4000)] = None,
        x_acting_rpps: Annotated[str | None, Header(max_length=11)] = None,
    ) -> JSONResponse:
        """Rights check: covered or not in each domain on the care date, the guarantee that
        applies, what is left of its ceilings, whether a prior agreement is needed, and an
        engagement number to quote on the invoice. A person not found, identifiers that do not
        belong together and a wrong birth date all answer `not_found`."""
        with platform.session() as session:
            try:
                api = apiclients.authenticate_call(
                    session, platform.keystore, authorization=authorization, dpop_proof=dpop, method="POST",
                    url=f"{origin}{request.url.path}", acting_for=x_acting_rpps,
                )  # fmt: skip
            except apiclients.InvalidClient as error:
                session.commit()
                return refused(error)
            session.commit()
            caller = CareCaller.of_api(api, "eligibility")
            context = caller.audit_context(ip=request.client.host if request.client else None,
                                           request_id=getattr(request.state, "request_id", None))  # fmt: skip
            try:
                answer = rights.check_rights(
                    session, platform.keystore, caller=caller, request=body.to_request(),
                    audit=platform.audit.for_request(context),
                )  # fmt: skip
            except rights.CareInputError as error:
                return input_refused(error)
        return JSONResponse(EligibilityOut.of(answer).model_dump(mode="json"))

    return router
