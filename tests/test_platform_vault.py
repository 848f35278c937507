"""The whole registry on the HashiCorp Vault transit provider.

No Vault server can be installed on this project's machines (only PyPI, Debian and npm are
reachable and none ships it), so the provider talks HTTP to tests/fake_vault.py, a real
server on loopback that follows the transit API and really encrypts."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import select

from rempart.crypto.keystore import KeyUnavailableError
from rempart.crypto.vault import VaultTransitProvider
from rempart.platform import Platform, open_platform
from rempart.registry import rekey, service
from rempart.registry.models import Beneficiary
from rempart.settings import Settings

from fake_vault import run_fake_vault
from feedkit import AMC_A, families, write_feed
from registry_helpers import run_import, two_insurers

pytestmark = pytest.mark.integration


@pytest.fixture
def vault_platform(settings: Settings) -> Iterator[Platform]:
    with run_fake_vault("s3cr3t-token") as url:
        vault_settings = settings.model_copy(
            update={"key_provider": "vault", "vault_addr": url, "vault_token": SecretStr("s3cr3t-token")}
        )
        platform = open_platform(vault_settings)
        yield platform
        platform.close()


def test_registry_runs_on_vault_transit(vault_platform: Platform, tmp_path: Path) -> None:
    platform = vault_platform
    assert isinstance(platform.keystore.provider, VaultTransitProvider)
    assert not platform.settings.resolved_keyring_path.exists()  # no local keyring in use
    two_insurers(platform)
    rows = families(3)
    assert run_import(platform, write_feed(tmp_path / "a.csv", rows)).inserted == 12

    def member() -> service.BeneficiaryView | None:
        with platform.session() as session:
            return service.find_by_card(session, platform.keystore, amc_number=AMC_A, member_number="M0000001",
                                        birth_date=dt.date(1980, 5, 17), birth_rank=1)  # fmt: skip

    assert member() is not None
    with platform.session() as session:
        platform.keystore.rotate(session, f"insurer-{AMC_A}")
        session.commit()
        assert rekey.rewrap(session, platform.keystore, audit=platform.audit.for_platform("test")) == 15
        assert len(rekey.retire_unused(session, platform.keystore)) == 1
    platform.keystore.forget()
    found = member()
    assert found is not None and found.first_name == "Julien"

    with platform.session() as session:
        service.shred_insurer(session, platform.keystore, amc_number=AMC_A, audit=platform.audit.for_platform("test"))
        session.commit()
    assert not platform.keystore.provider.exists(f"insurer-{AMC_A}")
    with platform.session() as session:
        row = session.execute(select(Beneficiary).limit(1)).scalar_one()
        with pytest.raises(KeyUnavailableError):
            platform.keystore.field_key(session, row.dek_id)
