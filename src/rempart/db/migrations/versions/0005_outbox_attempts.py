"""outbox attempts: a message that fails waits and is retried, without holding up the others

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("outbox", sa.Column("attempts", sa.Integer(), server_default="0", nullable=False))
    op.add_column("outbox", sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("outbox", sa.Column("given_up_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("outbox", sa.Column("last_error", sa.String(length=200), nullable=True))


def downgrade() -> None:
    for column in ("last_error", "given_up_at", "next_attempt_at", "attempts"):
        op.drop_column("outbox", column)
