"""Row-level security: an insurer's connection sees only that insurer's rows, whatever SQL it runs.

ASVS 5.0 V8 (authorization): V8.2 operation-level and data-level access control enforced at a
trusted layer — here the database itself, for insurer staff."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from rempart.identity.tenancy import tenant_connection
from rempart.platform import Platform
from rempart.registry import service

from feedkit import AMC_A, AMC_B, families, write_feed
from registry_helpers import run_import, two_insurers

pytestmark = pytest.mark.integration

TENANT_TABLES = ["insurers", "contracts", "members", "beneficiaries", "coverage_periods", "imports", "data_keys"]


@pytest.fixture
def two_tenants(platform: Platform, tmp_path: Path) -> Platform:
    two_insurers(platform)
    assert run_import(platform, write_feed(tmp_path / "a.csv", families(3)), amc=AMC_A).inserted == 12
    assert run_import(platform, write_feed(tmp_path / "b.csv", families(2, first=50)), amc=AMC_B).inserted == 8
    return platform


def insurer_ids(platform: Platform) -> tuple[object, object]:
    with platform.session() as session:
        return service.get_insurer(session, AMC_A).id, service.get_insurer(session, AMC_B).id


def test_v8_tenant_connection_sees_only_its_insurer(two_tenants: Platform) -> None:
    a, b = insurer_ids(two_tenants)
    with tenant_connection(two_tenants.url, insurer_id=a) as conn:  # type: ignore[arg-type]
        assert conn.execute("SELECT count(*) FROM beneficiaries").fetchone() == (12,)
        assert conn.execute("SELECT count(*) FROM beneficiaries WHERE insurer_id = %s", (b,)).fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM members").fetchone() == (3,)
        assert conn.execute("SELECT DISTINCT insurer_id FROM coverage_periods").fetchall() == [(a,)]
        assert conn.execute("SELECT amc_number FROM insurers").fetchall() == [(AMC_A,)]
        assert conn.execute("SELECT count(*) FROM data_keys WHERE insurer_id IS DISTINCT FROM %s", (a,)).fetchone() == (
            0,
        )
        assert conn.execute("SELECT count(*) FROM contracts WHERE code = 'BONLEVEL'").fetchone() == (0,)  # B's
    with tenant_connection(two_tenants.url, insurer_id=b) as conn:  # type: ignore[arg-type]
        assert conn.execute("SELECT count(*) FROM beneficiaries").fetchone() == (8,)


@pytest.mark.parametrize(
    "escape",
    [
        "SET ROLE postgres",
        "SET ROLE rempart_platform",
        "SET SESSION AUTHORIZATION postgres",
        "SET ROLE {other}",
        "ALTER TABLE beneficiaries DISABLE ROW LEVEL SECURITY",
        "ALTER TABLE beneficiaries NO FORCE ROW LEVEL SECURITY",
        "DROP POLICY tenant_own ON beneficiaries",
        "UPDATE tenant_roles SET insurer_id = '{b}'",
        "INSERT INTO tenant_roles (role_name, insurer_id) VALUES (session_user, '{b}')",
        "UPDATE beneficiaries SET insurer_id = '{b}'",
        "CREATE FUNCTION public.peek() RETURNS bigint LANGUAGE sql SECURITY DEFINER"
        " AS 'SELECT count(*) FROM beneficiaries'",
        "SELECT count(*) FROM guard.canary_beneficiaries",
    ],
)
def test_v8_a_tenant_cannot_escape_its_binding(two_tenants: Platform, escape: str) -> None:
    a, b = insurer_ids(two_tenants)
    other = f"rempart_t_{b.hex}"  # type: ignore[attr-defined]
    with tenant_connection(two_tenants.url, insurer_id=a) as conn:  # type: ignore[arg-type]
        conn.autocommit = True
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(escape.format(b=b, other=other))
        # Whatever was tried, the binding holds.
        assert conn.execute("SELECT count(*) FROM beneficiaries").fetchone() == (12,)


def test_v8_changing_settings_or_current_role_does_not_change_the_tenant(two_tenants: Platform) -> None:
    a, b = insurer_ids(two_tenants)
    with tenant_connection(two_tenants.url, insurer_id=a) as conn:  # type: ignore[arg-type]
        conn.autocommit = True
        conn.execute("SELECT set_config('rempart.tenant', %s, false)", (str(b),))
        conn.execute("SET ROLE rempart_tenant")  # allowed (its own group), and harmless
        assert conn.execute("SELECT count(*) FROM beneficiaries").fetchone() == (12,)
        conn.execute("RESET ROLE")
        assert conn.execute("SELECT count(*) FROM beneficiaries WHERE insurer_id = %s", (b,)).fetchone() == (0,)


def test_the_platform_connection_still_sees_every_insurer(two_tenants: Platform) -> None:
    with two_tenants.raw_connection() as conn:
        assert conn.execute("SELECT count(*) FROM beneficiaries").fetchone() == (20,)


def test_v8_every_table_with_an_insurer_is_isolated_or_closed_to_tenants(platform: Platform) -> None:
    """A table added later with an `insurer_id` must get row-level security, or stay out of reach."""
    with platform.raw_connection() as conn:
        rows = conn.execute(
            "SELECT c.relname, c.relrowsecurity AND c.relforcerowsecurity,"
            " has_table_privilege('rempart_tenant', c.oid, 'SELECT')"
            " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'public' AND c.relkind = 'r'"
            " AND EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'insurer_id')"
        ).fetchall()
    assert rows
    exposed = [name for name, forced, readable in rows if readable and not forced]
    assert exposed == []
