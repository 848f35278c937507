"""Care on HTTP, the REST door: practice software (DPoP-bound tokens, acting for a professional
of its establishment). Thin: authenticate, parse, call the use case, render. Identifiers of a
person travel in request bodies, never in a URL."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from sqlalchemy.orm import Session

from rempart.api.oauth import PROOF_HEADERS, Proof, proof_of, refused, target_path
from rempart.audit.service import Recorder
from rempart.care import agreements, invoices
from rempart.care import eligibility as rights
from rempart.care import fhir as care_fhir
from rempart.care.caller import CareCaller
from rempart.care.errors import CareInputError
from rempart.care.schemas import (
    AgreementIn,
    AgreementOut,
    EligibilityIn,
    EligibilityOut,
    InvoiceIn,
    InvoiceOut,
    InvoiceSummaryOut,
)
from rempart.db import raw
from rempart.db.base import utcnow
from rempart.identity import apiclients
from rempart.platform import Platform

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "no valid DPoP-bound token"}, 403: {"description": "the token lacks the scope"},
    422: {"description": "a field refused: which, and why"}, 429: {"description": "a quota is spent"},
    503: {"description": "the audit log is unavailable: nothing was done or returned"},
}  # fmt: skip


def input_refused(error: CareInputError) -> JSONResponse:
    return JSONResponse({"error": "invalid_request", "field": error.field, "reason": error.reason}, status_code=422)


def build_router(platform: Platform) -> APIRouter:
    router = APIRouter()
    origin = platform.settings.portal_origin

    def call(
        request: Request, proof: Proof, scope: str,
        use_case: Callable[[Session, CareCaller, Recorder], Response], *, fhir: bool = False,
        autocommit: bool = False,
    ) -> Response:  # fmt: skip
        """Authenticate practice software (a DPoP-bound token, the professional it acts for,
        the scope), then run one use case with the caller and its audit recorder. The FHIR door
        answers its refusals as OperationOutcome. With `autocommit`, for a use case whose writes
        are each one statement, every statement commits as it runs."""
        with platform.session(autocommit=autocommit) as session:
            try:
                api = apiclients.authenticate_call(
                    session, platform.keystore, authorization=proof.authorization, dpop_proof=proof.dpop,
                    method=request.method, url=origin + target_path(request), acting_for=proof.acting_rpps,
                )  # fmt: skip
            except apiclients.InvalidClient as error:
                session.commit()
                answer = refused(error)
                if fhir:
                    code = "login" if answer.status_code == 401 else "invalid"
                    outcome = care_fhir.operation_outcome([(code, "Authorization", error.error)])
                    challenge = {k: v for k, v in answer.headers.items() if k.lower() == "www-authenticate"}
                    return JSONResponse(outcome, answer.status_code, challenge, media_type=care_fhir.FHIR_JSON)
                return answer
            raw.commit(session)  # at once, the proof's jti and the API's counts: a failed use case still spent them
            caller = CareCaller.of_api(api, scope)
            context = caller.audit_context(ip=request.client.host if request.client else None,
                                           request_id=getattr(request.state, "request_id", None))  # fmt: skip
            try:
                return use_case(session, caller, platform.audit.for_request(context))
            except CareInputError as error:
                if fhir:
                    expression = care_fhir.expression_of(error.field)
                    return fhir_refused([("business-rule" if error.field == "engagement" else "invalid", expression,
                                          error.reason)])  # fmt: skip
                return input_refused(error)
            except care_fhir.FhirInputError as error:
                return fhir_refused([(error.code, error.expression, error.reason)])

    @router.post("/api/v1/care/agreements", tags=["care"], response_model=AgreementOut, status_code=201,
                 responses=ERRORS, openapi_extra=PROOF_HEADERS)  # fmt: skip
    def request_agreement(
        body: AgreementIn,
        request: Request,
        proof: Annotated[Proof, Depends(proof_of)],
    ) -> Response:
        """Prior agreement on a quote (optics, dental, hearing, hospital): the AMC amount of each
        line, an agreement number and its expiry; the amounts are reserved until used,
        cancelled or expired."""

        def agree(session: Session, caller: CareCaller, audit: Recorder) -> Response:
            lines = [line.to_line() for line in body.lines]
            answer = agreements.request_agreement(session, caller=caller, engagement=body.engagement, lines=lines,
                                                  audit=audit)  # fmt: skip
            return JSONResponse(AgreementOut.of(answer).model_dump(mode="json"), status_code=201)

        return call(request, proof, "agreements", agree)

    @router.post(
        "/api/v1/care/agreements/{number}/cancel",
        tags=["care"],
        status_code=204,
        responses=ERRORS,
        openapi_extra=PROOF_HEADERS,
    )
    def cancel_agreement(
        number: str,
        request: Request,
        proof: Annotated[Proof, Depends(proof_of)],
    ) -> Response:
        """Give up an agreement: what it reserved counts no more."""

        def cancel(session: Session, caller: CareCaller, audit: Recorder) -> Response:
            agreements.cancel_agreement(session, caller=caller, number=number[:24], audit=audit)
            return Response(status_code=204)

        return call(request, proof, "agreements", cancel)

    replayed: dict[int | str, dict[str, Any]] = {200: {"description": "the invoice this Idempotency-Key made"}}

    @router.post("/api/v1/care/invoices", tags=["care"], response_model=InvoiceOut, status_code=201,
                 responses={**ERRORS, **replayed}, openapi_extra=PROOF_HEADERS)  # fmt: skip
    def submit_invoice(
        body: InvoiceIn,
        request: Request,
        idempotency_key: Annotated[str, Header(max_length=100)],
        proof: Annotated[Proof, Depends(proof_of)],
    ) -> Response:
        """An invoice quoting the rights check's engagement (and the agreement where the domain
        needs one): accepted with the AMC and patient amounts of each line, or rejected with a
        reason code. The same Idempotency-Key with the same invoice returns that invoice."""

        def submit(session: Session, caller: CareCaller, audit: Recorder) -> Response:
            answer = invoices.submit_invoice(
                session, caller=caller, idempotency_key=idempotency_key, engagement=body.engagement,
                agreement=body.agreement, lines=[line.to_line() for line in body.lines], audit=audit,
            )  # fmt: skip
            return JSONResponse(
                InvoiceOut.of(answer).model_dump(mode="json"), status_code=200 if answer.replayed else 201
            )

        return call(request, proof, "invoices", submit)

    @router.get(
        "/api/v1/care/invoices",
        tags=["care"],
        response_model=list[InvoiceSummaryOut],
        responses=ERRORS,
        openapi_extra=PROOF_HEADERS,
    )
    def list_invoices(
        request: Request,
        proof: Annotated[Proof, Depends(proof_of)],
        state: Literal["received", "accepted", "rejected", "paid", "cancelled"] | None = None,
    ) -> Response:
        """This establishment's invoices, newest first (at most 100): states and amounts."""

        def listing(session: Session, caller: CareCaller, _: Recorder) -> Response:
            found = invoices.list_invoices(session, caller=caller, state=state)
            return JSONResponse([InvoiceSummaryOut(**s.__dict__).model_dump(mode="json") for s in found])

        return call(request, proof, "invoices", listing)

    @router.post("/api/v1/care/invoices/{invoice_id}/cancel", tags=["care"], response_model=InvoiceOut,
                 responses=ERRORS, openapi_extra=PROOF_HEADERS)  # fmt: skip
    def cancel_invoice(
        invoice_id: uuid.UUID,
        request: Request,
        proof: Annotated[Proof, Depends(proof_of)],
    ) -> Response:
        """Withdraw an invoice before it is paid."""

        def cancel(session: Session, caller: CareCaller, audit: Recorder) -> Response:
            answer = invoices.cancel_invoice(session, caller=caller, invoice_id=invoice_id, audit=audit)
            return JSONResponse(InvoiceOut.of(answer).model_dump(mode="json"))

        return call(request, proof, "invoices", cancel)

    @router.post(
        "/api/v1/care/eligibility",
        tags=["care"],
        response_model=EligibilityOut,
        responses=ERRORS,
        openapi_extra=PROOF_HEADERS,
    )
    def eligibility(
        body: EligibilityIn,
        request: Request,
        proof: Annotated[Proof, Depends(proof_of)],
    ) -> Response:
        """Rights check: covered or not in each domain on the care date, the guarantee that
        applies, what is left of its ceilings, whether a prior agreement is needed, and an
        engagement number to quote on the invoice. A person not found, identifiers that do not
        belong together and a wrong birth date all answer `not_found`."""

        def check(session: Session, caller: CareCaller, audit: Recorder) -> Response:
            answer = rights.check_rights(session, platform.keystore, caller=caller, request=body.to_request(),
                                         audit=audit)  # fmt: skip
            return JSONResponse(EligibilityOut.of(answer).model_dump(mode="json"))

        # A rights check writes in single statements (the API's and the guard's counts, its
        # record): no transaction around them, which spares six BEGIN and COMMIT round trips a
        # check. (A check the day's quota refuses gives its reserved miss back in a second
        # statement: lost in a crash between the two, the miss stays spent, which fails closed.)
        return call(request, proof, "eligibility", check, autocommit=True)

    fhir_errors: dict[int | str, dict[str, Any]] = {
        401: {"description": "OperationOutcome: no valid DPoP-bound token"},
        422: {"description": "OperationOutcome: an element refused (expression) and why"},
        503: {"description": "the audit log is unavailable: nothing was done or returned"},
    }

    @router.post(
        "/fhir/r4/CoverageEligibilityRequest/$submit", tags=["fhir"], responses=fhir_errors, openapi_extra=PROOF_HEADERS
    )
    async def fhir_eligibility(
        request: Request,
        proof: Annotated[Proof, Depends(proof_of)],
    ) -> Response:
        """FHIR R4: a CoverageEligibilityRequest (a contained Patient with its birth date, rank
        of birth or NIR; a contained Coverage with the AMC payor and the member number) answered
        by a CoverageEligibilityResponse. The same rights check as the REST door."""
        document = await _json(request)

        def check(session: Session, caller: CareCaller, audit: Recorder) -> Response:
            asked, resource = care_fhir.rights_request(document)
            _same_professional(resource, "provider", proof.acting_rpps)
            answer = rights.check_rights(session, platform.keystore, caller=caller, request=asked, audit=audit)
            body = care_fhir.eligibility_response(answer, resource, utcnow())
            return JSONResponse(body, media_type=care_fhir.FHIR_JSON)

        return await run_in_threadpool(call, request, proof, "eligibility", check,
                                       fhir=True, autocommit=True)  # fmt: skip

    @router.post("/fhir/r4/Claim/$submit", tags=["fhir"], responses=fhir_errors, openapi_extra=PROOF_HEADERS)
    async def fhir_claim(
        request: Request,
        proof: Annotated[Proof, Depends(proof_of)],
        idempotency_key: Annotated[str | None, Header(max_length=100)] = None,
    ) -> Response:
        """FHIR R4: a Claim, `use` preauthorization (a quote: a prior agreement) or claim (an
        invoice, with an Idempotency-Key header since $submit is not idempotent), answered by a
        ClaimResponse. The engagement (and the agreement) are the insurance's preAuthRef."""
        document = await _json(request)
        peek = document.get("use") if isinstance(document, dict) else None
        scope = "agreements" if peek == "preauthorization" else "invoices"

        def submit(session: Session, caller: CareCaller, audit: Recorder) -> Response:
            use, engagement, agreement, lines, resource = care_fhir.claim_request(document)
            _same_professional(resource, "provider", proof.acting_rpps)
            answer: agreements.AgreementAnswer | invoices.InvoiceAnswer
            if use == "preauthorization":
                answer = agreements.request_agreement(session, caller=caller, engagement=engagement, lines=lines,
                                                      audit=audit)  # fmt: skip
                status = 201
            else:
                answer = invoices.submit_invoice(
                    session, caller=caller, idempotency_key=idempotency_key or "", engagement=engagement,
                    agreement=agreement, lines=lines, audit=audit,
                )  # fmt: skip
                status = 200 if answer.replayed else 201
            body = care_fhir.claim_response(use, resource, answer, utcnow())
            return JSONResponse(body, status_code=status, media_type=care_fhir.FHIR_JSON)

        return await run_in_threadpool(call, request, proof, scope, submit, fhir=True)

    return router


def fhir_refused(problems: list[tuple[str, str, str]]) -> JSONResponse:
    return JSONResponse(care_fhir.operation_outcome(problems), status_code=422, media_type=care_fhir.FHIR_JSON)


async def _json(request: Request) -> Any:
    """The body as JSON, or None (then refused as not a resource by the mapping)."""
    try:
        return await request.json()
    except ValueError:
        return None


def _same_professional(resource: Any, field: str, rpps: str | None) -> None:
    """A resource naming its provider by RPPS must name the professional the call acts for."""
    named = care_fhir.acting_rpps(resource, field)
    if named is not None and named != rpps:
        raise care_fhir.FhirInputError(f"{resource.get_resource_type()}.{field}",
                                       "names another professional than X-Acting-RPPS", "business-rule")  # fmt: skip
