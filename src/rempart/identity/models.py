"""Identity tables. This first part binds insurer staff to their tenant in the database itself."""

from __future__ import annotations

import uuid

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from rempart.db.base import Base, Timestamped


class TenantRole(Base, Timestamped):
    """The PostgreSQL login role an insurer's staff connect as, and the insurer it is bound to.

    Row-level security reads this mapping through `session_user`, which a session cannot
    change (SET ROLE changes `current_user` only, and tenant roles are members of nothing
    but the privilege group `rempart_tenant`)."""

    __tablename__ = "tenant_roles"

    role_name: Mapped[str] = mapped_column(String(63), primary_key=True)
    insurer_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("insurers.id"), unique=True)
