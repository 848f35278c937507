"""Registry tables. Columns ending in `_ct` hold AES-256-GCM ciphertext (see crypto.fields);
columns ending in `_bidx` hold truncated blind indexes (see crypto.blind_index). Nothing that
identifies a person is stored in clear."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import (
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from rempart.db.base import Base, Timestamped, new_id

INSURER_ACTIVE = "active"
INSURER_SHREDDED = "shredded"


class Insurer(Base, Timestamped):
    __tablename__ = "insurers"
    __table_args__ = (CheckConstraint("status IN ('active', 'shredded')", name="status"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    amc_number: Mapped[str] = mapped_column(String(10), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    siren: Mapped[str] = mapped_column(String(9))
    expected_population: Mapped[int]
    index_bits: Mapped[int] = mapped_column(SmallInteger)
    status: Mapped[str] = mapped_column(String(10), default=INSURER_ACTIVE)
    shredded_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class Contract(Base, Timestamped):
    __tablename__ = "contracts"
    __table_args__ = (UniqueConstraint("insurer_id", "code"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    insurer_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("insurers.id"))
    code: Mapped[str] = mapped_column(String(40))
    label: Mapped[str] = mapped_column(String(200))
    responsable: Mapped[bool] = mapped_column(default=True)


class ScheduleVersion(Base, Timestamped):
    """A guarantee schedule (format of shared/vectors/README.md) valid from a date."""

    __tablename__ = "schedule_versions"
    __table_args__ = (
        UniqueConstraint("contract_id", "valid_from"),
        CheckConstraint("valid_to IS NULL OR valid_to >= valid_from", name="dates"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    contract_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("contracts.id"))
    valid_from: Mapped[dt.date] = mapped_column(Date)
    valid_to: Mapped[dt.date | None] = mapped_column(Date)
    format: Mapped[int] = mapped_column(SmallInteger)
    schedule: Mapped[dict[str, Any]] = mapped_column(JSONB)
    sha256: Mapped[str] = mapped_column(String(64))


# Foreign keys and the hot path. An import writes millions of rows and PostgreSQL checks each
# foreign key row by row, so only the keys that carry structure are declared: member -> insurer,
# beneficiary -> member, period -> beneficiary and contract. `insurer_id` copies (kept on every
# row for tenant isolation) and `dek_id` point at rows that are never deleted — shredding and
# retirement are state changes, and triggers refuse DELETE on insurers and data_keys — so those
# keys would cost a lookup per row to protect against nothing that can happen.


class Member(Base, Timestamped):
    """The person who holds the contract (adhérent); beneficiaries hang off it."""

    __tablename__ = "members"
    __table_args__ = (Index("ix_members_lookup", "insurer_id", "number_bidx"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    insurer_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("insurers.id"))
    dek_id: Mapped[int]
    member_number_ct: Mapped[bytes] = mapped_column(LargeBinary)
    member_nir_ct: Mapped[bytes] = mapped_column(LargeBinary)
    number_bidx: Mapped[int | None] = mapped_column(Integer)


class Beneficiary(Base, Timestamped):
    __tablename__ = "beneficiaries"
    __table_args__ = (
        CheckConstraint("relationship IN ('member', 'spouse', 'child', 'other')", name="relationship"),
        CheckConstraint("birth_rank BETWEEN 1 AND 9", name="birth_rank"),
        Index("ix_beneficiaries_card", "insurer_id", "card_bidx"),
        Index("ix_beneficiaries_nir", "insurer_id", "nir_bidx"),
        Index("ix_beneficiaries_member_nir", "insurer_id", "member_nir_bidx"),
        Index("ix_beneficiaries_member", "member_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    insurer_id: Mapped[uuid.UUID]
    member_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("members.id"))
    dek_id: Mapped[int]
    nir_ct: Mapped[bytes | None] = mapped_column(LargeBinary)
    family_name_ct: Mapped[bytes] = mapped_column(LargeBinary)
    first_name_ct: Mapped[bytes] = mapped_column(LargeBinary)
    birth_name_ct: Mapped[bytes | None] = mapped_column(LargeBinary)
    birth_date_ct: Mapped[bytes] = mapped_column(LargeBinary)
    birth_rank: Mapped[int] = mapped_column(SmallInteger)
    relationship: Mapped[str] = mapped_column(String(10))
    nir_bidx: Mapped[int | None] = mapped_column(Integer)
    card_bidx: Mapped[int | None] = mapped_column(Integer)
    member_nir_bidx: Mapped[int | None] = mapped_column(Integer)
    updated_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class CoveragePeriod(Base, Timestamped):
    __tablename__ = "coverage_periods"
    __table_args__ = (
        UniqueConstraint("beneficiary_id", "start_date"),
        CheckConstraint("end_date IS NULL OR end_date >= start_date", name="dates"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id, server_default=func.gen_random_uuid())
    insurer_id: Mapped[uuid.UUID]
    beneficiary_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("beneficiaries.id"))
    contract_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("contracts.id"))
    start_date: Mapped[dt.date] = mapped_column(Date)
    end_date: Mapped[dt.date | None] = mapped_column(Date)
    closed_by_import_id: Mapped[uuid.UUID | None]


class Establishment(Base, Timestamped):
    """A place of care and billing entity (business data: not personal)."""

    __tablename__ = "establishments"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    finess: Mapped[str | None] = mapped_column(String(9), unique=True)
    siret: Mapped[str | None] = mapped_column(String(14), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(40))


class Professional(Base, Timestamped):
    __tablename__ = "professionals"
    __table_args__ = (
        CheckConstraint("id_kind IN ('rpps', 'adeli')", name="id_kind"),
        Index("ix_professionals_lookup", "identifier_bidx"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    dek_id: Mapped[int]
    id_kind: Mapped[str] = mapped_column(String(5))
    identifier_ct: Mapped[bytes] = mapped_column(LargeBinary)
    identifier_bidx: Mapped[int] = mapped_column(Integer)
    family_name_ct: Mapped[bytes] = mapped_column(LargeBinary)
    first_name_ct: Mapped[bytes] = mapped_column(LargeBinary)
    iban_ct: Mapped[bytes | None] = mapped_column(LargeBinary)
    email_ct: Mapped[bytes | None] = mapped_column(LargeBinary)
    phone_ct: Mapped[bytes | None] = mapped_column(LargeBinary)
    profession: Mapped[str] = mapped_column(String(60))
    specialty: Mapped[str | None] = mapped_column(String(80))
    updated_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class Practice(Base):
    """A professional practising in an establishment."""

    __tablename__ = "practices"

    professional_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("professionals.id"), primary_key=True)
    establishment_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("establishments.id"), primary_key=True)


class ImportRecord(Base):
    """Who imported which file when, and what it changed. Holds no personal data."""

    __tablename__ = "imports"
    __table_args__ = (
        CheckConstraint("status IN ('applied', 'partial', 'rejected')", name="status"),
        Index("ix_imports_insurer_sha", "insurer_id", "file_sha256"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    insurer_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("insurers.id"))
    kind: Mapped[str] = mapped_column(String(20))
    mode: Mapped[str] = mapped_column(String(10))
    actor: Mapped[str] = mapped_column(String(120))
    file_name: Mapped[str] = mapped_column(Text)
    file_sha256: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(10))
    rows_total: Mapped[int] = mapped_column(default=0)
    rows_inserted: Mapped[int] = mapped_column(default=0)
    rows_updated: Mapped[int] = mapped_column(default=0)
    rows_unchanged: Mapped[int] = mapped_column(default=0)
    rows_rejected: Mapped[int] = mapped_column(default=0)
    coverage_closed: Mapped[int] = mapped_column(default=0)
    started_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class CanaryBeneficiary(Base):
    """Canary beneficiaries: flagged only here, in a schema ordinary roles cannot read.

    The beneficiary rows themselves are indistinguishable from any other; any access to one
    of these ids by a professional is a signal for the guard.
    """

    __tablename__ = "canary_beneficiaries"
    __table_args__ = ({"schema": "guard"},)

    beneficiary_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("beneficiaries.id"), primary_key=True)


class IbanChange(Base, Timestamped):
    """A professional's new IBAN, held for a cooling-off period before payments use it."""

    __tablename__ = "iban_changes"
    __table_args__ = (Index("ix_iban_changes_professional", "professional_id", "effective_at"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    professional_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("professionals.id"))
    dek_id: Mapped[int]
    new_iban_ct: Mapped[bytes] = mapped_column(LargeBinary)
    requested_by: Mapped[uuid.UUID | None]
    effective_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    cancelled_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class OutboxMessage(Base, Timestamped):
    """A message to send outside the platform (e-mail); the recipient address is encrypted."""

    __tablename__ = "outbox"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    dek_id: Mapped[int]
    recipient_ct: Mapped[bytes] = mapped_column(LargeBinary)
    subject: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text)
    sent_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    # Delivery: a failure waits longer each time; after MAX_ATTEMPTS the message is given up
    # (and the operators told), never blocking the messages behind it.
    attempts: Mapped[int] = mapped_column(default=0, server_default="0")
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    given_up_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(String(200))
