"""Schemathesis over the care API's OpenAPI: whatever the schema admits (and the malformed
bodies it derives), the server answers without a 5xx, and a 4xx never echoes a NIR.

Each generated call is made as practice software makes it: a DPoP-bound token and a fresh
proof for the call's method and path, acting for the establishment's professional, against a
platform holding insured families (so some generated checks and invoices go deep)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rempart.api.app import create_app
from rempart.platform import Platform, open_platform

from apikit import PracticeSoftware, proof
from carekit import MEMBER_BIRTH, pharmacy
from conftest import make_settings
from feedkit import person_nir
from portal_server import free_port, serve

pytestmark = pytest.mark.integration

EXAMPLES = 40


@pytest.fixture(scope="module")
def served(
    module_database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Platform, PracticeSoftware]]:
    """One platform for the whole run (the schema's operations, each with many cases)."""
    port = free_port()
    origin = f"http://localhost:{port}"
    settings_ = make_settings(module_database_url, tmp_path_factory.mktemp("fuzz") / "data")
    platform = open_platform(settings_.model_copy(update={"public_origin": origin}))
    with serve(create_app(platform), port), httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
        _, software = pharmacy((platform, client), tmp_path_factory.mktemp("feeds"))
        yield platform, software
    platform.close()


@pytest.fixture(scope="module")
def api_schema(served: tuple[Platform, PracticeSoftware]) -> Any:
    _, software = served
    document = httpx.get(f"{software.base}/openapi.json").json()
    return schemathesis.openapi.from_dict(document).include(path_regex=r"^/api/v1/care/")


class Token:
    """The practice software's token, renewed before its five minutes are up."""

    def __init__(self, software: PracticeSoftware) -> None:
        self.software, self.issued = software, time.monotonic()

    def current(self) -> str:
        if time.monotonic() - self.issued > 240:
            self.software.token, self.issued = self.software._token("eligibility agreements invoices"), time.monotonic()
        return self.software.token


def test_no_5xx_and_no_echo(api_schema: Any, served: tuple[Platform, PracticeSoftware]) -> None:
    """Every care operation, EXAMPLES generated cases each (valid and derived from the schema)."""
    _, software = served
    token = Token(software)
    secret = person_nir(1, MEMBER_BIRTH, 1)
    failures: list[tuple[str, str, int, str]] = []
    calls = 0

    def call(case: Any) -> None:
        nonlocal calls
        calls += 1
        url = f"{software.origin}{case.formatted_path}"
        current = token.current()
        headers = {"Authorization": f"DPoP {current}", "DPoP": proof(software.dpop_key, case.method, url, current),
                   "X-Acting-RPPS": software.rpps}  # fmt: skip
        given_headers = {k.lower(): v for k, v in (case.headers or {}).items()}
        if "idempotency-key" in given_headers:
            headers["Idempotency-Key"] = str(given_headers["idempotency-key"])[:100] or "k"
        response = case.call(base_url=software.base, headers=headers)
        if response.status_code >= 500 or secret in response.text:
            failures.append((case.method, case.formatted_path, response.status_code, response.text[:300]))

    for result in api_schema.get_all_operations():
        operation = result.ok()

        @given(operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def run(case: Any) -> None:
            call(case)

        run()
    assert calls >= EXAMPLES
    assert failures == []


def test_the_schema_covers_every_care_operation(api_schema: Any) -> None:
    operations = {(op.ok().method.upper(), op.ok().path) for op in api_schema.get_all_operations()}
    assert {("POST", "/api/v1/care/eligibility"), ("POST", "/api/v1/care/invoices"),
            ("POST", "/api/v1/care/agreements"), ("GET", "/api/v1/care/invoices")} <= operations  # fmt: skip


# Near-valid requests: a valid body with one field replaced by anything JSON can hold.
ANYTHING = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40)
    | st.sampled_from(["", "0", "-1", "1e309", "10.001", "2026-02-30", "9999-12-31", "\u0000", "'; DROP TABLE x; --"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)  # fmt: skip


def test_near_valid_requests_get_a_4xx_or_an_answer(served: tuple[Platform, PracticeSoftware]) -> None:
    _, software = served
    secret = person_nir(1, MEMBER_BIRTH, 1)
    today = time.strftime("%Y-%m-%d")
    check = {"amc_number": "12345678", "member_number": "M0000001", "birth_date": MEMBER_BIRTH.isoformat(),
             "birth_rank": 1, "care_date": today, "domains": ["pharmacy"]}  # fmt: skip
    engagement = software.post("/api/v1/care/eligibility", check).json()["engagement"]
    line = {"domain": "pharmacy", "act": "PHA", "date": today, "price": "10.00", "br": "10.00", "amo_rate": 65}
    token = Token(software)
    seen: dict[int, int] = {}

    @given(st.sampled_from(sorted(check)), ANYTHING)
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def eligibility(field: str, value: Any) -> None:
        token.current()
        answer = software.post("/api/v1/care/eligibility", {**check, field: value})
        seen[answer.status_code] = seen.get(answer.status_code, 0) + 1
        assert answer.status_code < 500 and secret not in answer.text, (field, value, answer.text[:300])

    @given(st.sampled_from(sorted(line)), ANYTHING, st.booleans())
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def invoice(field: str, value: Any, replace_key: bool) -> None:
        token.current()
        body = {"engagement": engagement, "lines": [{**line, field: value}]}
        key = "k" * 101 if replace_key else uuid.uuid4().hex
        answer = software.post("/api/v1/care/invoices", body, **{"Idempotency-Key": key})
        seen[answer.status_code] = seen.get(answer.status_code, 0) + 1
        assert answer.status_code < 500 and secret not in answer.text, (field, value, answer.text[:300])

    eligibility()
    invoice()
    assert seen.get(422, 0) > 0 and sum(seen.values()) >= 2 * EXAMPLES


def test_fixture_data_is_there(served: tuple[Platform, PracticeSoftware], tmp_path: Path) -> None:
    _, software = served
    found = software.post("/api/v1/care/eligibility", {"amc_number": "12345678", "member_number": "M0000001",
                                                      "birth_date": MEMBER_BIRTH.isoformat(), "birth_rank": 1,
                                                      "care_date": time.strftime("%Y-%m-%d"),
                                                      "domains": ["pharmacy"]})  # fmt: skip
    assert found.json()["outcome"] == "covered"


def test_every_care_operation_documents_the_headers_of_its_proof(served: tuple[Platform, PracticeSoftware]) -> None:
    """The proof's headers are read from the request, not declared as parameters: the schema
    still says, for every operation of both doors, that all three are required."""
    _, software = served
    document = httpx.get(f"{software.base}/openapi.json").json()
    operations = [(path, method, operation) for path, item in document["paths"].items()
                  if path.startswith(("/api/v1/care/", "/fhir/r4/")) for method, operation in item.items()]  # fmt: skip
    assert len(operations) == 8
    for path, method, operation in operations:
        headers = {p["name"]: p["required"] for p in operation.get("parameters", []) if p["in"] == "header"}
        assert {"Authorization", "DPoP", "X-Acting-RPPS"} <= {n for n, required in headers.items() if required}, (
            path,
            method,
        )
