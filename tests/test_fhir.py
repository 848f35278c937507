"""The FHIR R4 door: the same rights checks, agreements and invoices as the REST door, in
FHIR resources; answers validate against the R4B models; refusals are OperationOutcomes.

The requests follow the shape of the FHIR specification's own examples for these types
(identifier, priority, provider, insurer, insurance with its coverage, items with their
service dates and prices), with French identifiers (NIR, RPPS, FINESS, the AMC number) and
euros in place of the examples' American ones."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from fhir.resources.R4B.claimresponse import ClaimResponse
from fhir.resources.R4B.coverageeligibilityresponse import CoverageEligibilityResponse
from fhir.resources.R4B.operationoutcome import OperationOutcome

from rempart.care import fhir
from rempart.platform import Platform

from apikit import PracticeSoftware, proof
from carekit import MEMBER_BIRTH, TODAY, pharmacy
from feedkit import AMC_A, person_nir

pytestmark = pytest.mark.integration

ELIGIBILITY, CLAIM = "/fhir/r4/CoverageEligibilityRequest/$submit", "/fhir/r4/Claim/$submit"


@pytest.fixture(name="pharmacy")
def pharmacy_fixture(portal_client: tuple[Platform, httpx.Client], tmp_path: Path) -> tuple[Platform, PracticeSoftware]:
    return pharmacy(portal_client, tmp_path)


def eligibility_request(software: PracticeSoftware, *, member: str = "M0000001", birth: dt.date = MEMBER_BIRTH,
                        rank: int | None = 1, nir: str | None = None, domains: tuple[str, ...] = ("pharmacy",),
                        ) -> dict[str, Any]:  # fmt: skip
    patient: dict[str, Any] = {"resourceType": "Patient", "id": "p", "birthDate": birth.isoformat()}
    if rank is not None:
        patient["multipleBirthInteger"] = rank
    if nir is not None:
        patient["identifier"] = [{"system": fhir.NIR_SYSTEM, "value": nir}]
    return {
        "resourceType": "CoverageEligibilityRequest",
        "id": "52345",
        "contained": [
            patient,
            {"resourceType": "Coverage", "id": "c", "status": "active", "subscriberId": member,
             "beneficiary": {"reference": "#p"},
             "payor": [{"identifier": {"system": fhir.AMC_SYSTEM, "value": AMC_A}}]},
        ],
        "identifier": [{"system": "https://pharmacie.example/requests", "value": "52345"}],
        "status": "active",
        "priority": {"coding": [{"code": "normal"}]},
        "purpose": ["validation", "benefits"],
        "patient": {"reference": "#p"},
        "servicedDate": TODAY.isoformat(),
        "created": TODAY.isoformat(),
        "provider": {"identifier": {"system": fhir.RPPS_SYSTEM, "value": software.rpps}},
        "facility": {"identifier": {"system": fhir.FINESS_SYSTEM, "value": "750712184"}},
        "insurer": {"identifier": {"system": fhir.AMC_SYSTEM, "value": AMC_A}},
        "insurance": [{"focal": True, "coverage": {"reference": "#c"}}],
        "item": [{"category": {"coding": [{"system": fhir.DOMAIN_SYSTEM, "code": d}]}} for d in domains],
    }  # fmt: skip


def claim(software: PracticeSoftware, use: str, refs: list[str], items: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "resourceType": "Claim",
        "id": "100150",
        "identifier": [{"system": "https://pharmacie.example/claims", "value": "12345"}],
        "status": "active",
        "type": {"coding": [{"system": fhir.CLAIM_TYPE, "code": "pharmacy"}]},
        "use": use,
        "patient": {"display": "the patient of the engagement"},
        "created": TODAY.isoformat(),
        "insurer": {"identifier": {"system": fhir.AMC_SYSTEM, "value": AMC_A}},
        "provider": {"identifier": {"system": fhir.RPPS_SYSTEM, "value": software.rpps}},
        "priority": {"coding": [{"code": "normal"}]},
        "payee": {"type": {"coding": [{"code": "provider"}]}},
        "insurance": [{"sequence": 1, "focal": True, "coverage": {"display": "complementary"}, "preAuthRef": refs}],
        "item": [{"sequence": i, **item} for i, item in enumerate(items, start=1)],
    }


def item(domain: str, act: str, price: str, br: str, rate: float, day: dt.date = TODAY) -> dict[str, Any]:
    return {
        "category": {"coding": [{"system": fhir.DOMAIN_SYSTEM, "code": domain}]},
        "productOrService": {"coding": [{"system": fhir.ACT_SYSTEM, "code": act}]},
        "servicedDate": day.isoformat(),
        "unitPrice": {"value": float(price), "currency": "EUR"},
        "net": {"value": float(price), "currency": "EUR"},
        "extension": [{"url": fhir.EXT_AMO_BASE, "valueMoney": {"value": float(br), "currency": "EUR"}},
                      {"url": fhir.EXT_AMO_RATE, "valueDecimal": rate}],
    }  # fmt: skip


def test_a_coverage_eligibility_request_gets_a_valid_response(pharmacy: tuple[Platform, PracticeSoftware]) -> None:
    _, software = pharmacy
    answer = software.post(ELIGIBILITY, eligibility_request(software, domains=("pharmacy", "dental")))
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith(fhir.FHIR_JSON)
    resource = CoverageEligibilityResponse.model_validate(answer.json())
    assert resource.disposition == "covered" and resource.outcome == "complete"
    assert resource.preAuthRef and resource.preAuthRef.startswith("E")
    items = {i.category.coding[0].code: i for i in resource.insurance[0].item}
    assert items["pharmacy"].excluded is False and "100% BR" in items["pharmacy"].description
    assert items["dental"].excluded is True and items["dental"].authorizationRequired is True
    for secret in (person_nir(1, MEMBER_BIRTH, 1), "Lefebvre", "M0000001"):
        assert secret not in answer.text
    by_nir = eligibility_request(software, rank=None, nir=person_nir(1, MEMBER_BIRTH, 1), member="ignored")
    assert software.post(ELIGIBILITY, by_nir).json()["disposition"] == "covered"


def test_misses_answer_the_same_in_fhir_too(pharmacy: tuple[Platform, PracticeSoftware]) -> None:
    _, software = pharmacy
    bodies = [eligibility_request(software, member="M0999999"), eligibility_request(software, rank=2),
              eligibility_request(software, birth=dt.date(1980, 5, 18))]  # fmt: skip
    shapes = []
    for body in bodies:
        answer = software.post(ELIGIBILITY, body)
        resource = answer.json()
        CoverageEligibilityResponse.model_validate(resource)
        shapes.append((answer.status_code, resource["disposition"], "insurance" in resource, "preAuthRef" in resource))
    assert shapes == [(200, "not_found", False, False)] * 3


def test_a_preauthorization_then_a_claim(pharmacy: tuple[Platform, PracticeSoftware]) -> None:
    _, software = pharmacy
    engagement = software.post(ELIGIBILITY, eligibility_request(software, domains=("optical", "pharmacy"))).json()
    number = engagement["preAuthRef"]
    glasses = [item("optical", "frame", "150.00", "0.05", 60), item("optical", "lens", "200.00", "0.05", 60)]
    quote = software.post(CLAIM, claim(software, "preauthorization", [number], glasses))
    assert quote.status_code == 201, quote.text
    agreed = ClaimResponse.model_validate(quote.json())
    assert agreed.preAuthRef.startswith("A") and agreed.total[0].amount.value == 250
    benefits = [a.amount.value for i in agreed.item for a in i.adjudication if a.category.coding[0].code == "benefit"]
    assert benefits == [100, 150]

    sent = claim(software, "claim", [number, agreed.preAuthRef], glasses)
    key = {"Idempotency-Key": uuid.uuid4().hex}
    invoice = software.post(CLAIM, sent, **key)
    assert invoice.status_code == 201, invoice.text
    paid = ClaimResponse.model_validate(invoice.json())
    assert paid.outcome == "complete" and paid.disposition == "accepted"
    assert {t.category.coding[0].code: t.amount.value for t in paid.total} == {"submitted": 350, "benefit": 250}
    again = software.post(CLAIM, sent, **key)
    assert again.status_code == 200 and again.json()["identifier"] == invoice.json()["identifier"]

    pills = claim(software, "claim", [number], [item("pharmacy", "PHA", "10.00", "10.00", 65)])
    twice = [software.post(CLAIM, pills, **{"Idempotency-Key": uuid.uuid4().hex}).json() for _ in range(2)]
    assert [r["outcome"] for r in twice] == ["complete", "error"]
    assert twice[1]["error"][0]["code"]["coding"][0] == {"system": fhir.REJECTION_SYSTEM, "code": "duplicate"}


@pytest.mark.parametrize(
    ("mutate", "expression"),
    [
        (lambda c: c.update(resourceType="Patient"), "Claim"),
        (lambda c: c["item"][0]["net"].update(value=10.001), "Claim.item[0].net"),
        (lambda c: c["item"][0]["extension"].pop(0), "Claim.item[0].extension"),
        (lambda c: c["item"][0].update(servicedDate=(TODAY + dt.timedelta(days=9)).isoformat()),
         "Claim.item[0].servicedDate"),
        (lambda c: c["insurance"][0].update(preAuthRef=["E0000-0000-0000-0000"]), "Claim.insurance.preAuthRef"),
        (lambda c: c["insurance"][0].update(preAuthRef=[]), "Claim.insurance.preAuthRef"),
        (lambda c: c.update(provider={"identifier": {"system": fhir.RPPS_SYSTEM, "value": "10001234567"}}),
         "Claim.provider"),
        (lambda c: c.update(status=7), "Claim.status"),
        (lambda c: c["item"][0].update(servicedDate=str(TODAY.year)), "Claim.item[0].servicedDate"),
    ],
)  # fmt: skip
def test_refusals_are_operation_outcomes_naming_the_element(
    pharmacy: tuple[Platform, PracticeSoftware], mutate: Any, expression: str
) -> None:
    _, software = pharmacy
    number = software.post(ELIGIBILITY, eligibility_request(software)).json()["preAuthRef"]
    body = claim(software, "claim", [number], [item("pharmacy", "PHA", "10.00", "10.00", 65)])
    mutate(body)
    answer = software.post(CLAIM, body, **{"Idempotency-Key": uuid.uuid4().hex})
    assert answer.status_code == 422, answer.text
    outcome = OperationOutcome.model_validate(answer.json())
    assert outcome.issue[0].expression[0].startswith(expression), outcome.issue[0]
    assert outcome.issue[0].severity == "error" and outcome.issue[0].details.text


def test_a_claim_needs_an_idempotency_key_and_a_token(pharmacy: tuple[Platform, PracticeSoftware]) -> None:
    _, software = pharmacy
    number = software.post(ELIGIBILITY, eligibility_request(software)).json()["preAuthRef"]
    body = claim(software, "claim", [number], [item("pharmacy", "PHA", "10.00", "10.00", 65)])
    keyless = software.post(CLAIM, body)
    assert keyless.status_code == 422
    assert keyless.json()["issue"][0]["expression"] == ["Idempotency-Key (HTTP header)"]
    url = f"{software.origin}{CLAIM}"
    headers = {"Content-Type": fhir.FHIR_JSON, "DPoP": proof(software.dpop_key, "POST", url)}
    anonymous = httpx.post(f"{software.base}{CLAIM}", content=json.dumps(body), headers=headers)
    assert anonymous.status_code == 401 and anonymous.json()["resourceType"] == "OperationOutcome"


def test_fhir_json_content_type_is_taken(pharmacy: tuple[Platform, PracticeSoftware]) -> None:
    _, software = pharmacy
    url = f"{software.origin}{ELIGIBILITY}"
    answer = httpx.post(
        f"{software.base}{ELIGIBILITY}", content=json.dumps(eligibility_request(software)),
        headers={"Content-Type": fhir.FHIR_JSON, "Authorization": f"DPoP {software.token}",
                 "DPoP": proof(software.dpop_key, "POST", url, software.token), "X-Acting-RPPS": software.rpps},
    )  # fmt: skip
    assert answer.status_code == 200 and answer.json()["disposition"] == "covered"


def test_a_partial_birth_date_is_refused_not_logged(pharmacy: tuple[Platform, PracticeSoftware]) -> None:
    _, software = pharmacy
    body = eligibility_request(software)
    body["contained"][0]["birthDate"] = "1980"
    answer = software.post(ELIGIBILITY, body)
    assert answer.status_code == 422 and answer.json()["issue"][0]["expression"] == ["Patient.birthDate"]
