"""Registry use cases: one function each, keyword-only, taking the session and keystore.

Reads that return personal data (`find_*`, `read_*`) decrypt only rows whose blind index
matches and whose decrypted identifiers are then compared in full: never a scan, never a
partial match.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select, text, update
from sqlalchemy.orm import Session

from rempart.audit.service import Recorder
from rempart.coverage.schedule import Schedule, canonical_json, parse_schedule, schedule_digest
from rempart.crypto import blind_index, fields
from rempart.crypto.keystore import PLATFORM_KEK, Keystore, kek_name_for_insurer
from rempart.db import raw
from rempart.db.base import utcnow
from rempart.identity import tenancy
from rempart.registry import identifiers, sealing
from rempart.registry.models import (
    INSURER_ACTIVE,
    INSURER_SHREDDED,
    Beneficiary,
    CanaryBeneficiary,
    Contract,
    CoveragePeriod,
    Establishment,
    Insurer,
    Member,
    Practice,
    Professional,
    ScheduleVersion,
)
from rempart.registry.sealing import BENEFICIARIES, MEMBERS, PROFESSIONALS


class RegistryError(ValueError):
    """A request the registry refuses; the message says which value and why (never the value)."""


# -- insurers and contracts ----------------------------------------------------------------


def register_insurer(
    session: Session,
    keystore: Keystore,
    *,
    amc_number: str,
    name: str,
    siren: str,
    expected_population: int = 1_000_000,
) -> Insurer:
    try:
        amc = identifiers.validate_amc_number(amc_number)
        siren = identifiers.validate_siren(siren)
    except identifiers.IdentifierError as exc:
        raise RegistryError(exc.message) from None
    existing = session.scalars(select(Insurer).where(Insurer.amc_number == amc)).one_or_none()
    if existing is not None:
        if existing.status != INSURER_ACTIVE:
            raise RegistryError(f"insurer {amc} was shredded; its AMC number cannot be reused")
        return existing
    insurer = Insurer(
        amc_number=amc,
        name=name,
        siren=siren,
        expected_population=expected_population,
        index_bits=blind_index.bits_for_population(expected_population),
        status=INSURER_ACTIVE,
    )
    session.add(insurer)
    session.flush()
    keystore.create_owner_keys(session, kek_name=kek_name_for_insurer(amc), insurer_id=insurer.id)
    tenancy.ensure_tenant_role(session, insurer_id=insurer.id)
    return insurer


def insurer_amc(session: Session, insurer_id: uuid.UUID | None) -> str:
    insurer = session.get(Insurer, insurer_id) if insurer_id else None
    if insurer is None:
        raise RegistryError("no such insurer")
    return insurer.amc_number


def get_insurer(session: Session, amc_number: str) -> Insurer:
    insurer = session.scalars(select(Insurer).where(Insurer.amc_number == amc_number)).one_or_none()
    if insurer is None:
        raise RegistryError(f"no insurer with AMC number {amc_number}")
    return insurer


def ensure_contract(
    session: Session, *, insurer: Insurer, code: str, label: str | None = None, responsable: bool = True
) -> Contract:
    contract = session.scalars(
        select(Contract).where(Contract.insurer_id == insurer.id, Contract.code == code)
    ).one_or_none()
    if contract is None:
        contract = Contract(insurer_id=insurer.id, code=code, label=label or code, responsable=responsable)
        session.add(contract)
        session.flush()
    elif label and contract.label != label:
        contract.label = label
    return contract


@dataclass(frozen=True)
class ScheduleLoad:
    contract_code: str
    valid_from: dt.date
    changed: bool


def load_schedule(
    session: Session,
    *,
    amc_number: str,
    data: dict[str, Any],
    valid_from: dt.date,
    valid_to: dt.date | None = None,
    responsable: bool = True,
) -> ScheduleLoad:
    """Store a guarantee schedule version for the contract named by its `code`.

    The previous open-ended version is closed the day before; a version that would overlap
    another closed one is refused. Loading the same schedule again changes nothing."""
    schedule: Schedule = parse_schedule(data)
    if valid_to is not None and valid_to < valid_from:
        raise RegistryError("valid_to is before valid_from")
    insurer = get_insurer(session, amc_number)
    if insurer.status != INSURER_ACTIVE:
        raise RegistryError(f"insurer {amc_number} was shredded")
    contract = ensure_contract(
        session, insurer=insurer, code=schedule.code, label=schedule.label, responsable=responsable
    )
    digest = schedule_digest(schedule)
    versions = list(
        session.scalars(
            select(ScheduleVersion)
            .where(ScheduleVersion.contract_id == contract.id)
            .order_by(ScheduleVersion.valid_from)
            .with_for_update()
        )
    )
    for version in versions:
        if version.valid_from == valid_from:
            if version.sha256 == digest and version.valid_to == valid_to:
                return ScheduleLoad(schedule.code, valid_from, changed=False)
            version.schedule, version.sha256, version.valid_to = canonical_json(schedule), digest, valid_to
            return ScheduleLoad(schedule.code, valid_from, changed=True)
    for version in versions:
        ends = version.valid_to
        if version.valid_from < valid_from and (ends is None or ends >= valid_from):
            if ends is None:
                version.valid_to = valid_from - dt.timedelta(days=1)
            else:
                raise RegistryError(f"overlaps the version valid from {version.valid_from} to {ends}")
        elif version.valid_from > valid_from and (valid_to is None or valid_to >= version.valid_from):
            raise RegistryError(f"overlaps the later version valid from {version.valid_from}; give valid_to")
    session.add(
        ScheduleVersion(
            contract_id=contract.id,
            valid_from=valid_from,
            valid_to=valid_to,
            format=1,
            schedule=canonical_json(schedule),
            sha256=digest,
        )
    )
    session.flush()
    return ScheduleLoad(schedule.code, valid_from, changed=True)


def schedule_on(session: Session, *, contract_id: uuid.UUID, day: dt.date) -> dict[str, Any] | None:
    version = session.scalars(
        select(ScheduleVersion).where(
            ScheduleVersion.contract_id == contract_id,
            ScheduleVersion.valid_from <= day,
            (ScheduleVersion.valid_to.is_(None)) | (ScheduleVersion.valid_to >= day),
        )
    ).one_or_none()
    return None if version is None else version.schedule


# -- establishments and professionals ------------------------------------------------------


def register_establishment(
    session: Session, *, name: str, kind: str, finess: str | None = None, siret: str | None = None
) -> Establishment:
    try:
        finess = identifiers.validate_finess(finess) if finess else None
        siret = identifiers.validate_siret(siret) if siret else None
    except identifiers.IdentifierError as exc:
        raise RegistryError(exc.message) from None
    if not finess and not siret:
        raise RegistryError("an establishment needs a FINESS or a SIRET number")
    query = select(Establishment).where((Establishment.finess == finess) if finess else (Establishment.siret == siret))
    existing = session.scalars(query).one_or_none()
    if existing is not None:
        return existing
    establishment = Establishment(finess=finess, siret=siret, name=name, kind=kind)
    session.add(establishment)
    session.flush()
    return establishment


def establishment_name(session: Session, establishment_id: uuid.UUID | None) -> str | None:
    if establishment_id is None:
        return None
    establishment = session.get(Establishment, establishment_id)
    return None if establishment is None else establishment.name


def ensure_platform_keys(session: Session, keystore: Keystore) -> None:
    keystore.create_owner_keys(session, kek_name=PLATFORM_KEK, insurer_id=None)


def _professional_index(session: Session, keystore: Keystore) -> blind_index.IndexKey:
    bits = blind_index.bits_for_population(blind_index.NATIONAL_PROFESSIONALS)
    return keystore.index_keys(session, PLATFORM_KEK, bits).professional


def register_professional(
    session: Session,
    keystore: Keystore,
    *,
    identifier: str,
    family_name: str,
    first_name: str,
    profession: str,
    specialty: str | None,
    establishment_ids: list[uuid.UUID],
    iban: str | None = None,
    email: str | None = None,
    phone: str | None = None,
) -> Professional:
    try:
        if len(identifier) == 11:
            id_kind, identifier = "rpps", identifiers.validate_rpps(identifier)
        else:
            id_kind, identifier = "adeli", identifiers.validate_adeli(identifier)
        iban = identifiers.validate_iban(iban) if iban else None
    except identifiers.IdentifierError as exc:
        raise RegistryError(exc.message) from None
    ensure_platform_keys(session, keystore)
    if find_professional(session, keystore, identifier=identifier) is not None:
        raise RegistryError("a professional with this identifier is already registered")
    key = keystore.active_field_key(session, PLATFORM_KEK)
    pid = uuid.uuid4()

    def enc(column: str, value: str | None) -> bytes | None:
        return None if value is None else fields.encrypt(key, PROFESSIONALS, column, str(pid), value)

    professional = Professional(
        id=pid,
        dek_id=key.id,
        id_kind=id_kind,
        identifier_ct=enc("identifier", identifier),
        identifier_bidx=_professional_index(session, keystore).value(identifier),
        family_name_ct=enc("family_name", family_name),
        first_name_ct=enc("first_name", first_name),
        iban_ct=enc("iban", iban),
        email_ct=enc("email", email),
        phone_ct=enc("phone", phone),
        profession=profession,
        specialty=specialty,
    )
    session.add(professional)
    session.flush()
    for establishment_id in establishment_ids:
        session.add(Practice(professional_id=pid, establishment_id=establishment_id))
    session.flush()
    return professional


@dataclass(frozen=True)
class ProfessionalView:
    id: uuid.UUID
    identifier: str
    family_name: str
    first_name: str
    profession: str
    specialty: str | None
    iban_masked: str | None


def _open_professional(session: Session, keystore: Keystore, row: Professional) -> dict[str, str | None]:
    key = keystore.field_key(session, row.dek_id)
    return {
        column: sealing.open_field(key, PROFESSIONALS, column, row.id, getattr(row, f"{column}_ct"))
        for column in sealing.ENCRYPTED_COLUMNS[PROFESSIONALS]
    }


# Parsed guarantee schedules by content digest: rights checks and invoices read them on every
# call, and a version's content only changes with its digest.
_SCHEDULES: dict[str, Schedule] = {}


def schedule_of_version(session: Session, *, version_id: uuid.UUID, digest: str) -> Schedule:
    found = _SCHEDULES.get(digest)
    if found is None:
        stored = session.scalar(select(ScheduleVersion.schedule).where(ScheduleVersion.id == version_id))
        found = parse_schedule(stored)
        if len(_SCHEDULES) > 10_000:
            _SCHEDULES.clear()
        _SCHEDULES[digest] = found
    return found


# Which professional an API call acts for, per process for a minute: every call of practice
# software names it, and resolving it decrypts an identifier per blind-index candidate.
PRACTICE_CACHE_SECONDS = 60.0
_practising: dict[tuple[str, uuid.UUID], tuple[float, uuid.UUID | None]] = {}


def _kept_practice(identifier: str, establishment_id: uuid.UUID) -> tuple[float, uuid.UUID | None] | None:
    cached = _practising.get((identifier, establishment_id))
    return cached if cached is not None and time.monotonic() - cached[0] < PRACTICE_CACHE_SECONDS else None


def kept_practising_professional(identifier: str, establishment_id: uuid.UUID) -> uuid.UUID | None:
    """What `practising_professional` found less than a minute ago, if it found someone; None
    otherwise. No query and no decryption: what a caller not yet authenticated may ask."""
    kept = _kept_practice(identifier, establishment_id)
    return None if kept is None else kept[1]


def practising_professional(
    session: Session, keystore: Keystore, *, identifier: str, establishment_id: uuid.UUID
) -> uuid.UUID | None:
    """The id of the professional with this RPPS (or ADELI) practising at this establishment,
    or None. Decrypts only the identifier of each candidate; remembered for a minute."""
    kept = _kept_practice(identifier, establishment_id)
    if kept is not None:
        return kept[1]
    now = time.monotonic()
    bidx = _professional_index(session, keystore).value(identifier)
    rows = session.execute(
        select(Professional.id, Professional.dek_id, Professional.identifier_ct)
        .join(Practice, Practice.professional_id == Professional.id)
        .where(Professional.identifier_bidx == bidx, Practice.establishment_id == establishment_id)
    ).all()
    found = None
    for row_id, dek_id, identifier_ct in rows:
        key = keystore.field_key(session, dek_id)
        if fields.decrypt(key, PROFESSIONALS, "identifier", str(row_id), identifier_ct) == identifier:
            found = row_id
    if len(_practising) > 100_000:
        _practising.clear()
    _practising[(identifier, establishment_id)] = (now, found)
    return found


def find_professional(session: Session, keystore: Keystore, *, identifier: str) -> ProfessionalView | None:
    bidx = _professional_index(session, keystore).value(identifier)
    for row in session.scalars(select(Professional).where(Professional.identifier_bidx == bidx)):
        values = _open_professional(session, keystore, row)
        if values["identifier"] == identifier:
            iban = values["iban"]
            return ProfessionalView(
                id=row.id,
                identifier=identifier,
                family_name=values["family_name"] or "",
                first_name=values["first_name"] or "",
                profession=row.profession,
                specialty=row.specialty,
                # An IBAN is never shown back in full.
                iban_masked=None if iban is None else f"{iban[:4]}…{iban[-4:]}",
            )
    return None


# -- beneficiaries ---------------------------------------------------------------------------


@dataclass(frozen=True)
class BeneficiaryView:
    id: uuid.UUID
    insurer_amc: str
    member_number: str
    member_nir: str
    nir: str | None
    family_name: str
    first_name: str
    birth_name: str | None
    birth_date: dt.date
    birth_rank: int
    relationship: str


# What a BeneficiaryView discloses, as the audit log names it.
BENEFICIARY_FIELDS = ("member_number", "member_nir", "nir", "family_name", "first_name", "birth_name", "birth_date",
                      "birth_rank", "relationship")  # fmt: skip


def _open_beneficiary(session: Session, keystore: Keystore, row: Beneficiary, amc: str) -> BeneficiaryView:
    key = keystore.field_key(session, row.dek_id)
    values = {
        column: sealing.open_field(key, BENEFICIARIES, column, row.id, getattr(row, f"{column}_ct"))
        for column in sealing.ENCRYPTED_COLUMNS[BENEFICIARIES]
    }
    member = session.get_one(Member, row.member_id)
    member_key = keystore.field_key(session, member.dek_id)
    return BeneficiaryView(
        id=row.id,
        insurer_amc=amc,
        member_number=fields.decrypt(member_key, MEMBERS, "member_number", str(member.id), member.member_number_ct),
        member_nir=fields.decrypt(member_key, MEMBERS, "member_nir", str(member.id), member.member_nir_ct),
        nir=values["nir"],
        family_name=values["family_name"] or "",
        first_name=values["first_name"] or "",
        birth_name=values["birth_name"],
        birth_date=dt.date.fromisoformat(values["birth_date"] or ""),
        birth_rank=row.birth_rank,
        relationship=row.relationship,
    )


def read_beneficiary(
    session: Session, keystore: Keystore, *, beneficiary: Beneficiary, amc_number: str
) -> BeneficiaryView:
    """Decrypt one beneficiary. Callers are the access-controlled use cases (break-glass)."""
    return _open_beneficiary(session, keystore, beneficiary, amc_number)


def _active_insurers(session: Session, amc_number: str | None = None) -> list[Insurer]:
    query = select(Insurer).where(Insurer.status == INSURER_ACTIVE)
    if amc_number is not None:
        query = query.where(Insurer.amc_number == amc_number)
    return list(session.scalars(query))


def find_by_card(
    session: Session,
    keystore: Keystore,
    *,
    amc_number: str,
    member_number: str,
    birth_date: dt.date,
    birth_rank: int,
) -> BeneficiaryView | None:
    """The lookup a tiers-payant card allows: AMC number, member number, birth date, rank."""
    for insurer in _active_insurers(session, amc_number):
        index = keystore.index_keys(session, kek_name_for_insurer(insurer.amc_number), insurer.index_bits)
        bidx = sealing.card_index(index, insurer.amc_number, member_number, birth_date, birth_rank)
        for row in session.scalars(
            select(Beneficiary).where(Beneficiary.insurer_id == insurer.id, Beneficiary.card_bidx == bidx)
        ):
            view = _open_beneficiary(session, keystore, row, insurer.amc_number)
            if (view.member_number, view.birth_date, view.birth_rank) == (
                member_number,
                birth_date,
                birth_rank,
            ):
                return view
    return None


def find_by_nir(
    session: Session, keystore: Keystore, *, nir: str, birth_date: dt.date, amc_number: str | None = None
) -> list[BeneficiaryView]:
    """Beneficiaries whose own NIR and birth date match (one per insurer that covers them)."""
    found = []
    for insurer in _active_insurers(session, amc_number):
        index = keystore.index_keys(session, kek_name_for_insurer(insurer.amc_number), insurer.index_bits)
        bidx = sealing.nir_index(index, nir, birth_date)
        for row in session.scalars(
            select(Beneficiary).where(Beneficiary.insurer_id == insurer.id, Beneficiary.nir_bidx == bidx)
        ):
            view = _open_beneficiary(session, keystore, row, insurer.amc_number)
            if view.nir == nir and view.birth_date == birth_date:
                found.append(view)
    return found


def find_by_member_nir(
    session: Session,
    keystore: Keystore,
    *,
    member_nir: str,
    birth_date: dt.date,
    birth_rank: int,
    amc_number: str | None = None,
) -> list[BeneficiaryView]:
    """For a beneficiary without a NIR of their own (a child): member's NIR, birth date, rank."""
    found = []
    for insurer in _active_insurers(session, amc_number):
        index = keystore.index_keys(session, kek_name_for_insurer(insurer.amc_number), insurer.index_bits)
        bidx = sealing.member_nir_index(index, member_nir, birth_date, birth_rank)
        for row in session.scalars(
            select(Beneficiary).where(Beneficiary.insurer_id == insurer.id, Beneficiary.member_nir_bidx == bidx)
        ):
            view = _open_beneficiary(session, keystore, row, insurer.amc_number)
            if (view.member_nir, view.birth_date, view.birth_rank) == (member_nir, birth_date, birth_rank):
                found.append(view)
    return found


@dataclass(frozen=True)
class Identified:
    """Who a rights check found: internal ids only, nothing to show."""

    beneficiary_id: uuid.UUID
    insurer_id: uuid.UUID


# One decoy ciphertext per data key, decrypted when a lookup finds no candidate, so that a miss
# costs what a hit costs (a rights check must not tell, by its timing, that nobody matched).
_DECOYS: dict[bytes, bytes] = {}


def _decoy(key: fields.DataKey) -> bytes:
    # Keyed by a digest of the key itself: key ids repeat across databases (tests, restores).
    which = hashlib.sha256(b"rempart/decoy|" + key.key).digest()
    decoy = _DECOYS.get(which)
    if decoy is None:
        decoy = _DECOYS[which] = fields.encrypt(key, BENEFICIARIES, "birth_date", "decoy", "1900-01-01")
    return decoy


# The bucket of a blind index, with what identification decrypts (see db/raw.py: every check).
_CANDIDATES = (
    "SELECT b.id, b.dek_id, b.birth_date_ct, b.birth_rank, b.nir_ct, m.id, m.dek_id, m.member_number_ct"
    " FROM beneficiaries b JOIN members m ON m.id = b.member_id WHERE b.insurer_id = %s"
)
CANDIDATES_BY_CARD = _CANDIDATES + " AND b.card_bidx = %s"
CANDIDATES_BY_NIR = _CANDIDATES + " AND b.nir_bidx = %s"


def _decoy_key(session: Session, keystore: Keystore, insurer: ActiveInsurer) -> fields.DataKey:
    """A data key of the insurer's to decrypt the decoy with, remembered by the keystore: a hit
    finds its keys in the keystore's memory, so a miss must not pay a query for its key (that
    would tell). Both are read again when the keystore drops what it kept (KEYS_KEPT_S)."""
    return keystore.remembered_field_key(session, kek_name_for_insurer(insurer.amc_number))


def identify(
    session: Session,
    keystore: Keystore,
    *,
    insurer: ActiveInsurer,
    birth_date: dt.date,
    member_number: str | None = None,
    birth_rank: int | None = None,
    nir: str | None = None,
) -> Identified | None:
    """The beneficiary a card (member number, birth date, rank of birth) or a NIR with its birth
    date designates, or None. The same work whatever the outcome: every candidate of the blind
    index's bucket is decrypted (two fields each), never stopping at the first match, and a
    bucket with no candidate decrypts a decoy instead. Nothing is decrypted beyond what the
    comparison needs."""
    index = keystore.index_keys(session, kek_name_for_insurer(insurer.amc_number), insurer.index_bits)
    if nir is not None:
        bidx = sealing.nir_index(index, nir, birth_date)
        candidates = raw.fetch_all(session, CANDIDATES_BY_NIR, (insurer.id, bidx))
    elif member_number is not None and birth_rank is not None:
        bidx = sealing.card_index(index, insurer.amc_number, member_number, birth_date, birth_rank)
        candidates = raw.fetch_all(session, CANDIDATES_BY_CARD, (insurer.id, bidx))
    else:
        raise ValueError("a card (member number and rank of birth) or a NIR is needed")
    found = None
    for row_id, dek_id, birth_ct, rank, nir_ct, member_id, member_dek, number_ct in candidates:
        key = keystore.field_key(session, dek_id)
        born = fields.decrypt(key, BENEFICIARIES, "birth_date", str(row_id), birth_ct)
        if nir is not None:
            second = sealing.open_field(key, BENEFICIARIES, "nir", row_id, nir_ct)
            same = second == nir and born == birth_date.isoformat()
        else:
            member_key = keystore.field_key(session, member_dek)
            second = fields.decrypt(member_key, MEMBERS, "member_number", str(member_id), number_ct)
            same = (second, born, rank) == (member_number, birth_date.isoformat(), birth_rank)
        if same and found is None:
            found = Identified(row_id, insurer.id)
    if not candidates:
        key = _decoy_key(session, keystore, insurer)
        for _ in range(2):
            fields.decrypt(key, BENEFICIARIES, "birth_date", "decoy", _decoy(key))
    return found


@dataclass(frozen=True)
class ActiveInsurer:
    """What a rights check needs of an insurer: read as three columns, not an ORM object
    (every check reads it)."""

    id: uuid.UUID
    amc_number: str
    index_bits: int


# An active insurer is remembered for a few seconds (every rights check asks; a round trip
# each). A shred (`rempart insurer shred`, another process) takes effect here when that time is up,
# well inside the minute its keys are kept (crypto.keystore.KEYS_KEPT_S); meanwhile its blind
# index is gone, so checks find nobody. One not found is asked again every time (it may be
# onboarded any moment).
ACTIVE_INSURER_KEPT_S = 5.0
_insurers_kept: dict[tuple[object, str], tuple[float, ActiveInsurer]] = {}  # by database and AMC number


def active_insurer(session: Session, amc_number: str) -> ActiveInsurer | None:
    now = time.monotonic()
    key = (session.get_bind().engine.url, amc_number)
    kept = _insurers_kept.get(key)
    if kept is not None and now - kept[0] < ACTIVE_INSURER_KEPT_S:
        return kept[1]
    row = raw.fetch_one(
        session, "SELECT id, amc_number, index_bits FROM insurers WHERE status = %s AND amc_number = %s",
        (INSURER_ACTIVE, amc_number),
    )  # fmt: skip
    if row is None:
        _insurers_kept.pop(key, None)
        return None
    found = ActiveInsurer(row[0], row[1], int(row[2]))
    if len(_insurers_kept) > 10_000:
        _insurers_kept.clear()
    _insurers_kept[key] = (now, found)
    return found


def coverage_periods(session: Session, *, beneficiary_id: uuid.UUID) -> list[tuple[str, dt.date, dt.date | None]]:
    rows = session.execute(
        select(Contract.code, CoveragePeriod.start_date, CoveragePeriod.end_date)
        .join(Contract, Contract.id == CoveragePeriod.contract_id)
        .where(CoveragePeriod.beneficiary_id == beneficiary_id)
        .order_by(CoveragePeriod.start_date)
    )
    return [(code, start, end) for code, start, end in rows]


def flag_canaries(session: Session, *, beneficiary_ids: list[uuid.UUID]) -> None:
    for beneficiary_id in beneficiary_ids:
        session.merge(CanaryBeneficiary(beneficiary_id=beneficiary_id))


# -- crypto-shredding --------------------------------------------------------------------------


def shred_insurer(session: Session, keystore: Keystore, *, amc_number: str, audit: Recorder) -> int:
    """Destroy the insurer's KEK and its blind-index entries; its rows become unreadable for good.

    Returns the number of beneficiaries made unreadable. The ciphertexts stay (they are
    noise without the key); an older backup restored later is just as unreadable, since
    the KEK it would need no longer exists anywhere the platform can reach."""
    insurer = get_insurer(session, amc_number)
    # Wait for any import of this insurer to finish, and keep new ones out until we commit.
    session.execute(
        text("SELECT pg_advisory_xact_lock(hashtext('rempart-import'), hashtext(:amc))"), {"amc": amc_number}
    )
    count = session.query(Beneficiary).filter(Beneficiary.insurer_id == insurer.id).count()
    session.execute(
        update(Beneficiary)
        .where(Beneficiary.insurer_id == insurer.id)
        .values(nir_bidx=None, card_bidx=None, member_nir_bidx=None)
    )
    session.execute(update(Member).where(Member.insurer_id == insurer.id).values(number_bidx=None))
    session.execute(
        delete(CanaryBeneficiary).where(
            CanaryBeneficiary.beneficiary_id.in_(select(Beneficiary.id).where(Beneficiary.insurer_id == insurer.id))
        )
    )
    insurer.status = INSURER_SHREDDED
    insurer.shredded_at = utcnow()
    session.flush()
    audit.wrote(session, "insurer.shred", purpose="crypto-shredding", count=count,
                detail={"insurer": amc_number})  # fmt: skip
    # Destroy the key last but before commit: if it fails, nothing above is committed.
    keystore.shred(session, kek_name_for_insurer(amc_number))
    return count
