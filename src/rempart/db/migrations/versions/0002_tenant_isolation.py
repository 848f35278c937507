"""Tenant isolation: row-level security binding insurer staff to their insurer.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23

Insurer staff connect as a login role of their own (`rempart_t_<insurer id>`), member only
of the privilege group `rempart_tenant`. Every tenant table has row-level security enabled
and forced; the tenant policy compares the row's insurer with the one `tenant_roles` maps to
`session_user`, which no SQL statement of that session can change. The platform's own role
(member of `rempart_platform`, or a superuser) sees every row.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# table -> the condition binding a row to the session's insurer
TENANT_TABLES = {
    "insurers": "id = rempart_session_insurer()",
    "contracts": "insurer_id = rempart_session_insurer()",
    "schedule_versions": "contract_id IN (SELECT id FROM contracts WHERE insurer_id = rempart_session_insurer())",
    "members": "insurer_id = rempart_session_insurer()",
    "beneficiaries": "insurer_id = rempart_session_insurer()",
    "coverage_periods": "insurer_id = rempart_session_insurer()",
    "imports": "insurer_id = rempart_session_insurer()",
    "data_keys": "insurer_id = rempart_session_insurer()",
    "tenant_roles": "role_name = session_user",
}

CREATE_GROUPS = """
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'rempart_tenant') THEN
        CREATE ROLE rempart_tenant NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'rempart_platform') THEN
        CREATE ROLE rempart_platform NOLOGIN;
    END IF;
END $$;
"""

SESSION_INSURER = """
CREATE FUNCTION rempart_session_insurer() RETURNS uuid
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT insurer_id FROM public.tenant_roles WHERE role_name = session_user
$$;
"""


def upgrade() -> None:
    op.create_table(
        "tenant_roles",
        sa.Column("role_name", sa.String(length=63), nullable=False),
        sa.Column("insurer_id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["insurer_id"], ["insurers.id"], name=op.f("fk_tenant_roles_insurer_id_insurers")),
        sa.PrimaryKeyConstraint("role_name", name=op.f("pk_tenant_roles")),
        sa.UniqueConstraint("insurer_id", name=op.f("uq_tenant_roles_insurer_id")),
    )
    op.execute(CREATE_GROUPS)
    op.execute(SESSION_INSURER)
    op.execute("REVOKE ALL ON FUNCTION rempart_session_insurer() FROM PUBLIC")
    op.execute("GRANT EXECUTE ON FUNCTION rempart_session_insurer() TO rempart_tenant")
    op.execute("GRANT USAGE ON SCHEMA public TO rempart_tenant")
    for table, condition in TENANT_TABLES.items():
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
        op.execute(f"CREATE POLICY tenant_own ON {table} FOR SELECT TO rempart_tenant USING ({condition})")
        # The owner runs migrations and the platform's own work; FORCE would otherwise bind it too.
        op.execute(f"CREATE POLICY platform_all ON {table} TO rempart_platform USING (true) WITH CHECK (true)")
        op.execute(f"GRANT SELECT ON {table} TO rempart_tenant")
    op.execute("GRANT rempart_platform TO CURRENT_USER")


def downgrade() -> None:
    for table in TENANT_TABLES:
        op.execute(f"REVOKE ALL ON {table} FROM rempart_tenant")
        op.execute(f"DROP POLICY IF EXISTS tenant_own ON {table}")
        op.execute(f"DROP POLICY IF EXISTS platform_all ON {table}")
        op.execute(f"ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")
    op.execute("REVOKE USAGE ON SCHEMA public FROM rempart_tenant")
    op.execute("DROP FUNCTION IF EXISTS rempart_session_insurer()")
    op.drop_table("tenant_roles")
