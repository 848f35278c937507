"""Wrapped data keys. The database holds only wrapped forms; KEKs live in the key provider."""

from __future__ import annotations

import uuid

from sqlalchemy import CheckConstraint, ForeignKey, Identity, Index, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from rempart.db.base import Base, Timestamped

PURPOSE_FIELD = "field"  # AES-256-GCM data key for personal fields
PURPOSE_INDEX = "index"  # secret the blind-index keys derive from
PURPOSE_SIGNING = "signing"  # seed of a signing key (the audit log's checkpoints)

STATE_ACTIVE = "active"  # new writes use it (one per owner and purpose)
STATE_RETIRING = "retiring"  # still decrypts old rows until `keys rewrap` moves them
STATE_RETIRED = "retired"  # no row uses it; wrapped form erased


class DataKeyRow(Base, Timestamped):
    __tablename__ = "data_keys"
    __table_args__ = (
        CheckConstraint("purpose IN ('field', 'index', 'signing')", name="purpose"),
        CheckConstraint("state IN ('active', 'retiring', 'retired')", name="state"),
        Index(
            "uq_data_keys_one_active",
            "kek_name",
            "purpose",
            unique=True,
            postgresql_where="state = 'active'",
        ),
    )

    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    insurer_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("insurers.id"), index=True)
    kek_name: Mapped[str] = mapped_column(String(80))
    purpose: Mapped[str] = mapped_column(String(10))
    kek_version: Mapped[int]
    wrapped: Mapped[bytes | None] = mapped_column(LargeBinary)
    state: Mapped[str] = mapped_column(String(10), default=STATE_ACTIVE)
