"""The FHIR door's mapping (pure): FHIR R4 (4.0.1) JSON in, the care use cases' requests out,
their answers back as FHIR resources. Resources are validated with the R4B models of
`fhir.resources`: for CoverageEligibilityRequest/Response, Claim, ClaimResponse and
OperationOutcome the elements used here are the same in R4 and R4B (docs/care.md).

Identifiers, as FR Core writes them: the NIR (`urn:oid:1.2.250.1.213.1.4.8`), the RPPS
(`urn:oid:1.2.250.1.71.4.2.1`), FINESS (`urn:oid:1.2.250.1.71.4.2.2`). The platform's own
systems live under `https://rempart.fr/fhir/`. The rank of birth is `Patient.multipleBirthInteger`,
the member number `Coverage.subscriberId`, the insurer's AMC number the payor's identifier.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from pydantic import ValidationError

from rempart.care import lines as care_lines
from rempart.care.agreements import AgreementAnswer
from rempart.care.eligibility import RightsAnswer, RightsRequest
from rempart.care.invoices import REJECTIONS, InvoiceAnswer

NIR_SYSTEM = "urn:oid:1.2.250.1.213.1.4.8"
RPPS_SYSTEM = "urn:oid:1.2.250.1.71.4.2.1"
FINESS_SYSTEM = "urn:oid:1.2.250.1.71.4.2.2"
BASE = "https://rempart.fr/fhir"
AMC_SYSTEM = f"{BASE}/NamingSystem/amc-number"
ENGAGEMENT_SYSTEM = f"{BASE}/NamingSystem/engagement"
AGREEMENT_SYSTEM = f"{BASE}/NamingSystem/agreement"
CHECK_SYSTEM = f"{BASE}/NamingSystem/rights-check"
INVOICE_SYSTEM = f"{BASE}/NamingSystem/invoice"
DOMAIN_SYSTEM = f"{BASE}/CodeSystem/care-domain"
ACT_SYSTEM = f"{BASE}/CodeSystem/act"
REJECTION_SYSTEM = f"{BASE}/CodeSystem/rejection"
RESULT_SYSTEM = f"{BASE}/CodeSystem/rights-check-outcome"
LOCAL_ADJUDICATION = f"{BASE}/CodeSystem/adjudication"
ADJUDICATION = "http://terminology.hl7.org/CodeSystem/adjudication"
CLAIM_TYPE = "http://terminology.hl7.org/CodeSystem/claim-type"
EXT_AMO_BASE = f"{BASE}/StructureDefinition/amo-base"
EXT_AMO_RATE = f"{BASE}/StructureDefinition/amo-rate"
EXT_AMO_DEDUCTIBLE = f"{BASE}/StructureDefinition/amo-deductible"
EXT_BASKET = f"{BASE}/StructureDefinition/basket"
FHIR_JSON = "application/fhir+json"


class FhirInputError(ValueError):
    """A resource refused: `expression` (FHIRPath of the element) and why, never its value."""

    def __init__(self, expression: str, reason: str, code: str = "invalid") -> None:
        super().__init__(f"{expression}: {reason}")
        self.expression = expression
        self.reason = reason
        self.code = code


def operation_outcome(problems: list[tuple[str, str, str]]) -> dict[str, Any]:
    """OperationOutcome for (code, expression, reason) problems."""
    from fhir.resources.R4B.operationoutcome import OperationOutcome

    resource = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": code, "details": {"text": reason}, "expression": [expression]}
                  for code, expression, reason in problems],
    }  # fmt: skip
    return _valid(OperationOutcome, resource)


def _valid(model: Any, resource: dict[str, Any]) -> dict[str, Any]:
    """Validate against the model; what leaves the door is what the model accepts."""
    model.model_validate(resource)
    return resource


def _parse(model: Any, document: Any, name: str) -> Any:
    if not isinstance(document, dict) or document.get("resourceType") != name:
        raise FhirInputError(name, f"expected a {name} resource (resourceType)")
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ()) if not str(part).startswith("function"))
        raise FhirInputError(f"{name}.{where}" if where else name, first["msg"], "structure") from None


def _contained(resource: Any, reference: str | None, kind: str, expression: str) -> Any:
    if not reference or not reference.startswith("#"):
        raise FhirInputError(expression, f"a reference to a contained {kind} (#id)", "required")
    for item in resource.contained or []:
        if item.get_resource_type() == kind and item.id == reference[1:]:
            return item
    raise FhirInputError(expression, f"no contained {kind} with this id", "not-found")


def _identifier(identifiers: list[Any] | None, system: str) -> str | None:
    for identifier in identifiers or []:
        if identifier.system == system and identifier.value:
            return str(identifier.value)
    return None


def _code(concept: Any, system: str) -> str | None:
    for coding in (concept.coding or []) if concept is not None else []:
        if coding.system == system and coding.code:
            return str(coding.code)
    return None


def acting_rpps(resource: Any, field: str) -> str | None:
    """The RPPS a request names as its provider (checked against the caller's by the door)."""
    reference = getattr(resource, field, None)
    identifier = getattr(reference, "identifier", None) if reference is not None else None
    return str(identifier.value) if identifier is not None and identifier.system == RPPS_SYSTEM else None


# -- CoverageEligibilityRequest -> rights check ---------------------------------------------------


def rights_request(document: Any) -> tuple[RightsRequest, Any]:
    from fhir.resources.R4B.coverageeligibilityrequest import CoverageEligibilityRequest

    resource = _parse(CoverageEligibilityRequest, document, "CoverageEligibilityRequest")
    patient = _contained(resource, resource.patient.reference, "Patient", "CoverageEligibilityRequest.patient")
    if not resource.insurance:
        raise FhirInputError("CoverageEligibilityRequest.insurance", "one insurance with its coverage", "required")
    coverage = _contained(resource, resource.insurance[0].coverage.reference, "Coverage",
                          "CoverageEligibilityRequest.insurance[0].coverage")  # fmt: skip
    amc = next((p.identifier.value for p in coverage.payor if p.identifier and p.identifier.system == AMC_SYSTEM), None)
    insurer = resource.insurer.identifier if resource.insurer is not None else None
    if amc is None and insurer is not None and insurer.system == AMC_SYSTEM:
        amc = insurer.value
    if amc is None:
        raise FhirInputError("Coverage.payor", f"the insurer's AMC number ({AMC_SYSTEM})", "required")
    if patient.birthDate is None:
        raise FhirInputError("Patient.birthDate", "required", "required")
    care_date = resource.servicedDate
    if care_date is None:
        raise FhirInputError("CoverageEligibilityRequest.servicedDate", "the care date", "required")
    domains = [_code(item.category, DOMAIN_SYSTEM) for item in resource.item or []]
    if not domains or None in domains:
        raise FhirInputError("CoverageEligibilityRequest.item.category", f"care domains coded in {DOMAIN_SYSTEM}",
                             "required")  # fmt: skip
    nir = _identifier(patient.identifier, NIR_SYSTEM)
    rank = patient.multipleBirthInteger
    if rank is None and patient.multipleBirthBoolean is False:
        rank = 1
    request = RightsRequest(
        amc_number=str(amc), birth_date=_as_date(patient.birthDate, "Patient.birthDate"),
        care_date=_as_date(care_date, "CoverageEligibilityRequest.servicedDate"),
        domains=tuple(str(d) for d in domains), member_number=None if nir else coverage.subscriberId,
        birth_rank=None if nir else (rank if rank is not None else 1), nir=nir,
    )  # fmt: skip
    return request, resource


def _as_date(value: Any, expression: str) -> dt.date:
    """FHIR allows partial dates ("1980", "1980-05"); a care date and a birth date must be whole."""
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        raise FhirInputError(expression, "a full date, YYYY-MM-DD") from None


def _money(amount: Decimal | None) -> dict[str, Any] | None:
    return None if amount is None else {"value": float(amount), "currency": "EUR"}


def eligibility_response(answer: RightsAnswer, request: Any, created: dt.datetime) -> dict[str, Any]:
    from fhir.resources.R4B.coverageeligibilityresponse import CoverageEligibilityResponse

    items = []
    for domain in answer.domains:
        benefits = [
            {"type": {"text": f"ceiling {c.per}" + (f" ({', '.join(c.acts)})" if c.acts else "")},
             "allowedMoney": _money(c.amount), "usedMoney": _money(c.used)}
            for c in domain.ceilings
        ]  # fmt: skip
        description = "; ".join(_level_text(level) for level in domain.levels) or None
        items.append({
            "category": {"coding": [{"system": DOMAIN_SYSTEM, "code": domain.domain}]},
            "excluded": not domain.covered, "description": description or domain.reason,
            "authorizationRequired": domain.prior_agreement_required,
            **({"benefit": benefits} if benefits else {}),
        })  # fmt: skip
    insurance = []
    if answer.outcome != "not_found":
        period = {k: v.isoformat() for k, v in (("start", answer.valid_from), ("end", answer.valid_to)) if v}
        insurance.append({"coverage": {"display": answer.guarantee or "coverage"},
                          "inforce": answer.outcome == "covered", **({"benefitPeriod": period} if period else {}),
                          "item": items})  # fmt: skip
    identifiers = [{"system": CHECK_SYSTEM, "value": str(answer.reference)}]
    if answer.engagement:
        identifiers.append({"system": ENGAGEMENT_SYSTEM, "value": answer.engagement})
    resource = {
        "resourceType": "CoverageEligibilityResponse",
        "identifier": identifiers,
        "status": "active",
        "purpose": [str(p) for p in request.purpose] or ["validation"],
        "patient": {"type": "Patient", "display": "the patient of the request"},
        "servicedDate": answer.care_date.isoformat(),
        "created": created.isoformat(),
        "request": {"identifier": {"system": CHECK_SYSTEM, "value": str(answer.reference)}},
        "outcome": "complete",
        "disposition": answer.outcome,
        "insurer": {"identifier": {"system": AMC_SYSTEM, "value": answer.amc_number}},
        **({"insurance": insurance} if insurance else {}),
        **({"preAuthRef": answer.engagement} if answer.engagement else {}),
    }
    return _valid(CoverageEligibilityResponse, resource)


def _level_text(level: Any) -> str:
    if level.kind == "br_percent_incl":
        text = f"{level.percent}% BR (mandatory part included)"
    elif level.kind == "br_percent_extra":
        text = f"{level.percent}% BR on top of the mandatory part"
    elif level.kind == "flat":
        text = f"{level.amount} EUR per {level.per or 'act'}"
        if level.remaining is not None:
            text += f", {level.remaining} EUR left"
    else:
        text = "real cost"
    if level.plus_flat:
        text += f" + {level.plus_flat} EUR"
    if level.acts:
        text += f" (acts {', '.join(level.acts)})"
    if level.basket:
        text += f" ({level.basket})"
    return text


# -- Claim -> agreement or invoice ----------------------------------------------------------------


def claim_request(document: Any) -> tuple[str, str, str | None, list[care_lines.LineIn], Any]:
    """(use, engagement, agreement, lines, resource) of a Claim: `use` is preauthorization (a
    quote for a prior agreement) or claim (an invoice). The engagement and the agreement are
    the insurance's `preAuthRef` values (E… and A…)."""
    from fhir.resources.R4B.claim import Claim

    resource = _parse(Claim, document, "Claim")
    if resource.use not in ("claim", "preauthorization"):
        raise FhirInputError("Claim.use", "claim (an invoice) or preauthorization (a quote)")
    refs = [str(r) for insurance in resource.insurance for r in (insurance.preAuthRef or [])]
    engagement = next((r for r in refs if r.upper().startswith("E")), None)
    agreement = next((r for r in refs if r.upper().startswith("A")), None)
    if engagement is None:
        raise FhirInputError("Claim.insurance.preAuthRef", "the engagement number of the rights check", "required")
    if not resource.item:
        raise FhirInputError("Claim.item", "at least one item", "required")
    lines = [_line(item, i) for i, item in enumerate(resource.item)]
    return str(resource.use), engagement, agreement, lines, resource


def _line(item: Any, index: int) -> care_lines.LineIn:
    where = f"Claim.item[{index}]"
    domain = _code(item.category, DOMAIN_SYSTEM)
    act = _code(item.productOrService, ACT_SYSTEM)
    if domain is None:
        raise FhirInputError(f"{where}.category", f"the care domain, coded in {DOMAIN_SYSTEM}", "required")
    if act is None:
        raise FhirInputError(f"{where}.productOrService", f"the act, coded in {ACT_SYSTEM}", "required")
    if item.servicedDate is None:
        raise FhirInputError(f"{where}.servicedDate", "the date of the act", "required")
    price = item.net or item.unitPrice
    if price is None or price.value is None:
        raise FhirInputError(f"{where}.net", "the price charged", "required")
    extensions = {ext.url: ext for ext in item.extension or []}
    base, rate = extensions.get(EXT_AMO_BASE), extensions.get(EXT_AMO_RATE)
    if base is None or base.valueMoney is None:
        raise FhirInputError(f"{where}.extension", f"{EXT_AMO_BASE} (valueMoney)", "required")
    if rate is None or rate.valueDecimal is None:
        raise FhirInputError(f"{where}.extension", f"{EXT_AMO_RATE} (valueDecimal)", "required")
    deductible = extensions.get(EXT_AMO_DEDUCTIBLE)
    basket = extensions.get(EXT_BASKET)
    return care_lines.LineIn(
        domain=domain, act=act, date=_as_date(item.servicedDate, f"{where}.servicedDate"), price=str(price.value),
        br=str(base.valueMoney.value), amo_rate=str(rate.valueDecimal),
        amo_deductible=str(deductible.valueMoney.value) if deductible and deductible.valueMoney else "0.00",
        basket=str(basket.valueCode) if basket and basket.valueCode else None,
    )  # fmt: skip


def _adjudication(share: Any, price: Decimal | None = None) -> list[dict[str, Any]]:
    entries = [
        ({"system": LOCAL_ADJUDICATION, "code": "amo"}, share.amo),
        ({"system": ADJUDICATION, "code": "benefit"}, share.amc),
        ({"system": ADJUDICATION, "code": "copay"}, share.patient),
    ]
    if price is not None:
        entries.insert(0, ({"system": ADJUDICATION, "code": "submitted"}, price))
    return [{"category": {"coding": [coding]}, "amount": _money(amount)} for coding, amount in entries]


def claim_response(
    use: str, claim: Any, answer: AgreementAnswer | InvoiceAnswer, created: dt.datetime
) -> dict[str, Any]:
    from fhir.resources.R4B.claimresponse import ClaimResponse

    items = [{"itemSequence": i, "adjudication": _adjudication(share)} for i, share in enumerate(answer.lines, 1)]
    resource: dict[str, Any] = {
        "resourceType": "ClaimResponse",
        "status": "active",
        "type": claim.type.model_dump(mode="json", exclude_none=True),
        "use": use,
        "patient": {"type": "Patient", "display": "the patient of the claim"},
        "created": created.isoformat(),
        "insurer": {"display": "the patient's complementary insurer"},
        "item": items,
    }
    if isinstance(answer, AgreementAnswer):
        resource.update({
            "identifier": [{"system": AGREEMENT_SYSTEM, "value": answer.number}],
            "outcome": "complete", "disposition": answer.state, "preAuthRef": answer.number,
            "preAuthPeriod": {"end": answer.expires_on.isoformat()},
            "total": [{"category": {"coding": [{"system": ADJUDICATION, "code": "benefit"}]},
                       "amount": _money(answer.amc_total)}],
        })  # fmt: skip
    else:
        resource.update({
            "identifier": [{"system": INVOICE_SYSTEM, "value": str(answer.id)}],
            "outcome": "complete" if answer.state == "accepted" else "error",
            "disposition": answer.state if answer.reason is None else REJECTIONS.get(answer.reason, answer.reason),
            "total": [
                {"category": {"coding": [{"system": ADJUDICATION, "code": "submitted"}]},
                 "amount": _money(answer.price_total)},
                {"category": {"coding": [{"system": ADJUDICATION, "code": "benefit"}]},
                 "amount": _money(answer.amc_total)},
            ],
            **({"error": [{"code": {"coding": [{"system": REJECTION_SYSTEM, "code": answer.reason}]}}]}
               if answer.reason else {}),
        })  # fmt: skip
    return _valid(ClaimResponse, resource)


_LINE_ELEMENTS = {"price": "net", "br": f"extension('{EXT_AMO_BASE}')", "amo_rate": f"extension('{EXT_AMO_RATE}')",
                  "amo_deductible": f"extension('{EXT_AMO_DEDUCTIBLE}')", "date": "servicedDate",
                  "domain": "category", "act": "productOrService", "basket": f"extension('{EXT_BASKET}')"}  # fmt: skip
_FIELDS = {
    "amc_number": "Coverage.payor", "member_number": "Coverage.subscriberId", "birth_date": "Patient.birthDate",
    "birth_rank": "Patient.multipleBirthInteger", "nir": "Patient.identifier", "identification": "Patient.identifier",
    "care_date": "CoverageEligibilityRequest.servicedDate", "domains": "CoverageEligibilityRequest.item.category",
    "engagement": "Claim.insurance.preAuthRef", "agreement": "Claim.insurance.preAuthRef", "lines": "Claim.item",
    "Idempotency-Key": "Idempotency-Key (HTTP header)",
}  # fmt: skip


def expression_of(field: str) -> str:
    """The FHIRPath of the element a use case refused (its error names the REST field)."""
    if field.startswith("lines["):
        index, _, element = field[len("lines[") :].partition("].")
        return f"Claim.item[{index}].{_LINE_ELEMENTS.get(element, element)}"
    return _FIELDS.get(field, field)
