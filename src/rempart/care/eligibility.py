"""Rights check (eligibility): is this patient covered on this date for this care, and how?

The one use case behind the REST, FHIR and portal doors. What it accepts is only what a
tiers-payant card and the patient give: the AMC number, then either the member number with
the birth date and rank of birth, or the beneficiary's own NIR with the birth date. No search,
no partial match, no list.

No oracle: a person unknown, identifiers that do not belong together and a wrong birth date
all give the same answer ("not_found") with the same status, after the same work (the lookup
decrypts as much on a miss as on a hit, and both wait for a durable audit event). Only a
correctly identified beneficiary can be told "not covered on this date".

Order of work: validate, then the guard decides (before any lookup), then identify, then
coverage, then the audit event is made durable, and only then the answer leaves.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import secrets
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from rempart.audit import events as ev
from rempart.audit.service import Recorder
from rempart.care import lines as care_lines
from rempart.care.caller import CareCaller
from rempart.care.card import CardError, parse_card
from rempart.care.errors import CareInputError
from rempart.coverage.compute import Consumed
from rempart.coverage.schedule import DOMAIN_PATTERN, KNOWN_DOMAINS, Schedule
from rempart.coverage.summary import AGREEMENT_DOMAINS, Level, Remaining, summarize
from rempart.crypto.keystore import Keystore
from rempart.db import raw
from rempart.guard import decide
from rempart.registry import identifiers
from rempart.registry import service as registry
from rempart.registry.models import Contract, ScheduleVersion
from rempart.registry.service import ActiveInsurer

CARE_DATE_AHEAD = dt.timedelta(days=31)  # a check ahead of planned care (glasses, a stay)
CARE_DATE_BACK = dt.timedelta(days=730)  # invoices may follow care by up to two years
ENGAGEMENT_DAYS = 90  # an engagement may be quoted by an invoice up to 90 days after the care
MAX_DOMAINS = 10
FIELDS_DISCLOSED = ("coverage", "guarantee", "validity", "engagement")

NOT_FOUND = "not_found"
COVERED = "covered"
NOT_COVERED = "not_covered"
NO_COVERAGE_ON_DATE = "no_coverage_on_date"
NO_GUARANTEE = "no_guarantee"
_ENGAGEMENT_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford's base 32: no I, L, O, U


@dataclass(frozen=True)
class RightsRequest:
    amc_number: str | None
    birth_date: dt.date
    care_date: dt.date
    domains: tuple[str, ...]
    member_number: str | None = None
    birth_rank: int | None = None
    nir: str | None = None
    card_2d: str | None = None  # the card's scanned payload, in place of the AMC and member numbers


@dataclass(frozen=True)
class DomainAnswer:
    domain: str
    covered: bool
    reason: str | None  # why not covered: no_coverage_on_date, no_guarantee
    prior_agreement_required: bool
    levels: tuple[Level, ...] = ()
    ceilings: tuple[Remaining, ...] = ()


@dataclass(frozen=True)
class RightsAnswer:
    reference: uuid.UUID  # the check's reference, on every outcome
    outcome: str  # covered (in at least one domain asked), not_covered, not_found
    care_date: dt.date
    amc_number: str
    guarantee: str | None = None  # the contract's code, when identified
    valid_from: dt.date | None = None  # the coverage period that holds the care date
    valid_to: dt.date | None = None
    engagement: str | None = None
    engagement_valid_until: dt.date | None = None
    domains: tuple[DomainAnswer, ...] = ()


def new_engagement_number() -> str:
    """E then 16 characters of Crockford base 32 (80 random bits), grouped for reading aloud."""
    body = "".join(secrets.choice(_ENGAGEMENT_ALPHABET) for _ in range(16))
    return "E" + "-".join(body[i : i + 4] for i in range(0, 16, 4))


def _from_card(request: RightsRequest) -> RightsRequest:
    """A scanned card stands for the AMC and member numbers, if it is valid on the care date."""
    if request.card_2d is None:
        if request.amc_number is None:
            raise CareInputError("amc_number", "required (or a scanned card_2d)")
        return request
    try:
        card = parse_card(request.card_2d)
    except CardError as exc:
        raise CareInputError(f"card_2d.{exc.part}", exc.reason) from None
    if not card.valid_on(request.care_date):
        raise CareInputError("card_2d", "the card is not valid on the care date")
    if request.amc_number is not None and request.amc_number.strip() != card.amc_number:
        raise CareInputError("amc_number", "differs from the card's")
    if request.member_number is not None:
        raise CareInputError("member_number", "the card's payload already gives it")
    if request.nir is not None:
        raise CareInputError("identification", "give either the card (or its numbers) or a NIR, not both")
    return dataclasses.replace(request, amc_number=card.amc_number, member_number=card.member_number, card_2d=None)


def _validated(session: Session, request: RightsRequest, today: dt.date) -> tuple[RightsRequest, ActiveInsurer]:
    request = _from_card(request)
    assert request.amc_number is not None
    try:
        amc = identifiers.validate_amc_number(request.amc_number)
    except identifiers.IdentifierError as exc:
        raise CareInputError("amc_number", exc.message) from None
    insurer = registry.active_insurer(session, amc)
    if insurer is None:
        raise CareInputError("amc_number", "no insurer with this AMC number uses Rempart")
    if request.care_date > today + CARE_DATE_AHEAD:
        raise CareInputError("care_date", f"at most {CARE_DATE_AHEAD.days} days ahead")
    if request.care_date < today - CARE_DATE_BACK:
        raise CareInputError("care_date", "more than two years ago")
    if request.birth_date > today:
        raise CareInputError("birth_date", "in the future")
    if not request.domains or len(request.domains) > MAX_DOMAINS:
        raise CareInputError("domains", f"between 1 and {MAX_DOMAINS} care domains")
    if len(set(request.domains)) != len(request.domains):
        raise CareInputError("domains", "a domain is named twice")
    known = set(KNOWN_DOMAINS) | _insurer_domains(session, insurer)
    for domain in request.domains:
        if not DOMAIN_PATTERN.fullmatch(domain) or domain not in known:
            raise CareInputError("domains", f"unknown care domain (known: {', '.join(sorted(known))})")
    by_card = request.member_number is not None or request.birth_rank is not None
    if by_card == (request.nir is not None):
        raise CareInputError("identification", "give either the member number with the rank of birth, or a NIR")
    if request.nir is not None:
        try:
            nir = identifiers.normalize_nir(request.nir)
            identifiers.parse_nir(nir)
        except identifiers.IdentifierError as exc:
            raise CareInputError("nir", exc.message) from None
        return RightsRequest(amc, request.birth_date, request.care_date, request.domains, nir=nir), insurer
    member = (request.member_number or "").replace(" ", "").upper()
    if not member or len(member) > 20 or not member.isalnum() or not member.isascii():
        raise CareInputError("member_number", "1 to 20 letters or digits, as printed on the card")
    if request.birth_rank is None or not 1 <= request.birth_rank <= 9:
        raise CareInputError("birth_rank", "the rank of birth is a digit from 1 to 9 (1 unless twins)")
    cleaned = RightsRequest(amc, request.birth_date, request.care_date, request.domains, member, request.birth_rank)
    return cleaned, insurer


_DOMAINS: dict[uuid.UUID, tuple[float, set[str]]] = {}
DOMAINS_CACHE_SECONDS = 60.0  # a domain a new schedule brings is accepted within a minute


def _insurer_domains(session: Session, insurer: ActiveInsurer) -> set[str]:
    cached = _DOMAINS.get(insurer.id)
    if cached is not None and time.monotonic() - cached[0] < DOMAINS_CACHE_SECONDS:
        return cached[1]
    schedules = session.scalars(
        select(ScheduleVersion.schedule).join(Contract, Contract.id == ScheduleVersion.contract_id)
        .where(Contract.insurer_id == insurer.id)
    )  # fmt: skip
    domains = {rule["domain"] for schedule in schedules for rule in schedule.get("rules", [])}
    _DOMAINS[insurer.id] = (time.monotonic(), domains)
    return domains


def check_rights(
    session: Session,
    keystore: Keystore,
    *,
    caller: CareCaller,
    request: RightsRequest,
    audit: Recorder,
    today: dt.date | None = None,
) -> RightsAnswer:
    """Answer one rights check; commits its record (and engagement) once the audit holds it
    (if that commit fails, the audit tells of a check whose answer never left: fail closed)."""
    today = today or dt.datetime.now(dt.UTC).date()
    request, insurer = _validated(session, request, today)
    miss_key, miss_window = decide.admit(session, professional_id=caller.professional_id)  # before any lookup
    found = registry.identify(
        session, keystore, insurer=insurer, birth_date=request.birth_date, member_number=request.member_number,
        birth_rank=request.birth_rank, nir=request.nir,
    )  # fmt: skip
    reference = uuid.uuid4()
    # A miss walks the same coverage queries as a hit, for an id that matches nothing: the
    # answer differs, the work (and so the time it takes) does not.
    answer = _coverage(session, reference, insurer, found.beneficiary_id if found else uuid.uuid4(), request, today)
    outcome = NOT_FOUND if found is None else answer.outcome
    engagement = answer.engagement if found is not None else None
    # The audit first, then the record and its commit: the record's statement locks the guard's
    # misses counter (giving a miss back), and must hold it for a statement, not an audit round trip.
    if found is None:
        audit.found_nobody("rights.check", purpose="tiers-payant", detail={"check": str(reference)})
    else:
        audit.disclosed("rights.check", purpose="tiers-payant", subjects=[(ev.BENEFICIARY, found.beneficiary_id)],
                        fields=FIELDS_DISCLOSED,
                        detail={"check": str(reference), "outcome": answer.outcome})  # fmt: skip
    raw.run(session, RECORD_CHECK, {
        "miss_key": miss_key, "miss_window": miss_window,
        "id": reference, "establishment": caller.establishment_id, "professional": caller.professional_id,
        "client": caller.api_client_id, "account": caller.account_id, "insurer": insurer.id,
        "beneficiary": found.beneficiary_id if found else None, "care_date": request.care_date,
        "domains": list(request.domains), "outcome": outcome, "engagement": engagement,
        "covered": [d.domain for d in answer.domains if d.covered], "valid_until": answer.engagement_valid_until,
    })  # fmt: skip
    raw.commit(session)
    if found is None:
        return RightsAnswer(reference, NOT_FOUND, request.care_date, insurer.amc_number)
    return answer


# The check's record and, when it found cover, its engagement; when it found someone, the miss
# the guard took at admission given back (guard.decide.admit). One statement (see db/raw.py),
# the same on every path.
RECORD_CHECK = """
WITH found AS (
    UPDATE rate_counters SET hits = hits - 1
    WHERE key = %(miss_key)s AND window_start = %(miss_window)s AND hits > 0 AND %(outcome)s <> 'not_found'
), checked AS (
    INSERT INTO rights_checks (id, establishment_id, professional_id, api_client_id, account_id, insurer_id,
                               beneficiary_id, care_date, domains, outcome)
    VALUES (%(id)s, %(establishment)s, %(professional)s, %(client)s, %(account)s, %(insurer)s, %(beneficiary)s,
            %(care_date)s, %(domains)s, %(outcome)s)
    RETURNING id
)
INSERT INTO engagements (number, check_id, insurer_id, beneficiary_id, establishment_id, care_date, domains,
                         valid_until)
SELECT CAST(%(engagement)s AS text), id, %(insurer)s, %(beneficiary)s, %(establishment)s, %(care_date)s,
       CAST(%(covered)s AS text[]), %(valid_until)s
FROM checked WHERE CAST(%(engagement)s AS text) IS NOT NULL
"""

# The coverage period holding the care date, its contract and the schedule version in force,
# with what counts against the ceilings (care.lines.COUNTED): one round trip, one row always.
COVERAGE_ON = (
    """
SELECT p.start_date, p.end_date, p.code, p.version_id, p.sha256, u.domains, u.acts, u.days, u.amounts
FROM (SELECT 1) AS one
LEFT JOIN LATERAL (
    SELECT cp.start_date, cp.end_date, c.code, sv.id AS version_id, sv.sha256
    FROM coverage_periods cp
    JOIN contracts c ON c.id = cp.contract_id
    LEFT JOIN LATERAL (
        SELECT v.id, v.sha256 FROM schedule_versions v
        WHERE v.contract_id = cp.contract_id AND v.valid_from <= %(day)s
          AND (v.valid_to IS NULL OR v.valid_to >= %(day)s)
        ORDER BY v.valid_from DESC LIMIT 1
    ) sv ON true
    WHERE cp.beneficiary_id = %(beneficiary)s AND cp.start_date <= %(day)s
      AND (cp.end_date IS NULL OR cp.end_date >= %(day)s)
    ORDER BY cp.start_date DESC LIMIT 1
) p ON true
CROSS JOIN LATERAL (
    SELECT array_agg(domain) AS domains, array_agg(act) AS acts, array_agg(care_date) AS days,
           array_agg(amount) AS amounts
    FROM consumption WHERE """
    + care_lines.COUNTED
    + """
) u
"""
)


def _coverage(
    session: Session, reference: uuid.UUID, insurer: ActiveInsurer, beneficiary_id: uuid.UUID, request: RightsRequest,
    today: dt.date,
) -> RightsAnswer:  # fmt: skip
    day = request.care_date
    # Consumption is read whatever the period (see check_rights: the same work on each path).
    row = raw.fetch_one(session, COVERAGE_ON, {"day": day, "beneficiary": beneficiary_id, "today": today})
    assert row is not None  # one row always
    start, end, code, version_id, digest, used_domains, used_acts, used_days, used_amounts = row
    consumption = [Consumed(*used) for used in zip(used_domains or (), used_acts or (), used_days or (),
                                                   used_amounts or (), strict=True)]  # fmt: skip
    if start is None:
        domains = tuple(_not_covered(domain, NO_COVERAGE_ON_DATE) for domain in request.domains)
        return RightsAnswer(reference, NOT_COVERED, day, insurer.amc_number, domains=domains)
    schedule = None if version_id is None else registry.schedule_of_version(session, version_id=version_id,
                                                                            digest=digest)  # fmt: skip
    domains = tuple(_domain_answer(schedule, domain, day, consumption) for domain in request.domains)
    covered = any(domain.covered for domain in domains)
    engagement = new_engagement_number() if covered else None
    return RightsAnswer(
        reference, COVERED if covered else NOT_COVERED, day, insurer.amc_number, guarantee=code,
        valid_from=start, valid_to=end, engagement=engagement,
        engagement_valid_until=day + dt.timedelta(days=ENGAGEMENT_DAYS) if covered else None, domains=domains,
    )  # fmt: skip


def _not_covered(domain: str, reason: str) -> DomainAnswer:
    return DomainAnswer(domain, False, reason, domain in AGREEMENT_DOMAINS)


def _domain_answer(
    schedule: Schedule | None, domain: str, day: dt.date, consumption: Sequence[Consumed]
) -> DomainAnswer:
    if schedule is None:
        return _not_covered(domain, NO_GUARANTEE)
    summary = summarize(schedule, domain, day, consumption)
    if not summary.covered:
        return _not_covered(domain, NO_GUARANTEE)
    return DomainAnswer(domain, True, None, summary.prior_agreement_required, summary.levels, summary.ceilings)
