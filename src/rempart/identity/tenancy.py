"""Binding insurer staff to their insurer inside PostgreSQL (row-level security).

Each insurer gets a login role, `rempart_t_<insurer id>`, member of the privilege group
`rempart_tenant` only. Requests of that insurer's staff run on a connection logged in as that
role, so the database itself filters every tenant table to that insurer, whatever SQL the
request runs (migration 0002 holds the policies). Creating roles needs the platform's
database role to have CREATEROLE (a superuser has it); tenant roles authenticate like the
platform's own (Unix socket / trust in the embedded server; configure password or
certificate authentication for them on a shared server).
"""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy import text
from sqlalchemy.orm import Session

from rempart.db.server import libpq_url
from rempart.identity.models import TenantRole

TENANT_GROUP = "rempart_tenant"


def tenant_role_name(insurer_id: uuid.UUID) -> str:
    return f"rempart_t_{insurer_id.hex}"


def ensure_tenant_role(session: Session, *, insurer_id: uuid.UUID) -> str:
    """Create the insurer's login role (once per server) and map it to the insurer (once per database)."""
    name = tenant_role_name(insurer_id)
    exists = session.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :name"), {"name": name}).first()
    if not exists:
        raw = session.connection().connection.driver_connection
        assert isinstance(raw, psycopg.Connection)
        raw.execute(
            sql.SQL("CREATE ROLE {} LOGIN INHERIT NOCREATEDB NOCREATEROLE IN ROLE {}").format(
                sql.Identifier(name), sql.Identifier(TENANT_GROUP)
            )
        )
    if session.get(TenantRole, name) is None:
        session.add(TenantRole(role_name=name, insurer_id=insurer_id))
        session.flush()
    return name


def tenant_connection(database_url: str, *, insurer_id: uuid.UUID) -> psycopg.Connection[Any]:
    """A connection that can only ever see this insurer's rows."""
    return psycopg.connect(libpq_url(database_url), user=tenant_role_name(insurer_id))
