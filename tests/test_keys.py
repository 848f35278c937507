"""Encryption at rest end to end: swapped ciphertexts, rotation and rewrap, crypto-shredding,
backup and restore, and a database dump that holds nothing in clear."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import select, text

from rempart.crypto import keystore as keystore_module
from rempart.crypto.fields import DecryptionError
from rempart.crypto.keystore import KeyUnavailableError
from rempart.db.server import check_server_version, libpq_url, pg_tool
from rempart.platform import Platform, open_platform
from rempart.registry import rekey, service
from rempart.registry.models import Beneficiary

from feedkit import AMC_A, AMC_B, families, write_feed
from registry_helpers import run_import, two_insurers

pytestmark = pytest.mark.integration


def everyone(platform: Platform, rows: list[dict[str, str]], amc: str = AMC_A) -> list[service.BeneficiaryView | None]:
    with platform.session() as session:
        return [
            service.find_by_card(
                session,
                platform.keystore,
                amc_number=amc,
                member_number=r["member_number"],
                birth_date=dt.date.fromisoformat(r["birth_date"]),
                birth_rank=int(r["birth_rank"]),
            )
            for r in rows
        ]


@pytest.fixture
def loaded(platform: Platform, tmp_path: Path) -> tuple[Platform, list[dict[str, str]]]:
    two_insurers(platform)
    rows = families(10)
    assert run_import(platform, write_feed(tmp_path / "a.csv", rows)).status == "applied"
    return platform, rows


def test_ciphertext_swapped_between_rows_fails_to_decrypt(
    loaded: tuple[Platform, list[dict[str, str]]],
) -> None:
    platform, rows = loaded
    with platform.session() as session:
        a, b = session.scalars(select(Beneficiary).order_by(Beneficiary.id).limit(2)).all()
        session.execute(
            text("UPDATE beneficiaries SET family_name_ct = :ct WHERE id = :id"),
            {"ct": b.family_name_ct, "id": a.id},
        )
        session.commit()
    platform.keystore.forget()
    with pytest.raises(DecryptionError, match="family_name"):
        everyone(platform, rows)


def test_rotation_then_rewrap_keeps_every_row_readable(
    loaded: tuple[Platform, list[dict[str, str]]], tmp_path: Path
) -> None:
    platform, rows = loaded
    before = everyone(platform, rows)
    with platform.session() as session:
        platform.keystore.rotate(session, "insurer-" + AMC_A)
        session.commit()
    # New writes use the new key; old rows still read.
    more = families(2, first=100)
    run_import(platform, write_feed(tmp_path / "b.csv", more))
    assert everyone(platform, rows) == before
    with platform.session() as session:
        retiring = platform.keystore.retiring_key_ids(session)
        assert len(retiring) == 1 and rekey.rows_under(session, retiring) == 50  # 10 members + 40 beneficiaries
        assert rekey.retire_unused(session, platform.keystore) == []  # still in use: not retired
        assert rekey.rewrap(session, platform.keystore, audit=platform.audit.for_platform("test"), batch_rows=7) == 50
        assert rekey.rows_under(session, retiring) == 0
        assert rekey.retire_unused(session, platform.keystore) == retiring
    platform.keystore.forget()
    assert everyone(platform, rows) == before
    assert all(everyone(platform, more))
    # The old KEK version is gone from the keyring.
    keyring = platform.settings.resolved_keyring_path.read_text()
    assert '"1"' not in keyring.split(f'"insurer-{AMC_A}"')[1].split("}")[0]


def test_shredded_insurer_can_no_longer_be_read_or_found(
    loaded: tuple[Platform, list[dict[str, str]]], tmp_path: Path
) -> None:
    platform, rows = loaded
    run_import(platform, write_feed(tmp_path / "b.csv", families(2, first=50)), amc=AMC_B)
    with platform.session() as session:
        victim_id = session.scalars(select(Beneficiary.id).limit(1)).first()
        assert (
            service.shred_insurer(
                session, platform.keystore, amc_number=AMC_A, audit=platform.audit.for_platform("test")
            )
            == 40
        )
        session.commit()
    assert everyone(platform, rows) == [None] * 40
    assert not platform.keystore.provider.exists(f"insurer-{AMC_A}")
    assert f"insurer-{AMC_A}" not in platform.settings.resolved_keyring_path.read_text()
    with platform.session() as session:
        row = session.get_one(Beneficiary, victim_id)
        assert row.card_bidx is None and row.nir_bidx is None
        with pytest.raises(KeyUnavailableError):
            platform.keystore.field_key(session, row.dek_id)
        with pytest.raises(KeyUnavailableError):
            platform.keystore.index_keys(session, f"insurer-{AMC_A}", 16)
        assert (
            service.find_by_nir(session, platform.keystore, nir=rows[0]["member_nir"], birth_date=dt.date(1980, 5, 17))
            == []
        )
    # The other insurer is untouched.
    assert all(everyone(platform, families(2, first=50), AMC_B))


def test_a_shred_by_another_process_stops_reads_here_once_kept_keys_age_out(
    loaded: tuple[Platform, list[dict[str, str]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another worker of the server shreds the insurer: this process still holds the insurer's
    unwrapped keys, until they have been kept KEYS_KEPT_S; then it reads them again, wrapped,
    from the database, and finds them destroyed."""
    platform, _ = loaded
    other = open_platform(platform.settings, run_migrations=False)  # another process's keystore
    try:
        with platform.session() as session:
            dek_id = session.scalars(select(Beneficiary.dek_id).limit(1)).one()
            platform.keystore.field_key(session, dek_id)  # kept in this process's memory
            platform.keystore.remembered_field_key(session, f"insurer-{AMC_A}")
        with other.session() as session:
            service.shred_insurer(session, other.keystore, amc_number=AMC_A, audit=other.audit.for_platform("test"))
            session.commit()
        with platform.session() as session:
            platform.keystore.field_key(session, dek_id)  # still kept: the window this bounds
            monkeypatch.setattr(keystore_module, "KEYS_KEPT_S", 0.0)
            with pytest.raises(KeyUnavailableError):
                platform.keystore.field_key(session, dek_id)
            with pytest.raises(KeyUnavailableError):
                platform.keystore.remembered_field_key(session, f"insurer-{AMC_A}")
            with pytest.raises(KeyUnavailableError):
                platform.keystore.index_keys(session, f"insurer-{AMC_A}", 16)
    finally:
        other.close()


def _dump(platform: Platform, path: Path) -> None:
    subprocess.run(
        [
            pg_tool("pg_dump", check_server_version(platform.url)),
            "--format=custom",
            "--no-owner",
            f"--file={path}",
            libpq_url(platform.url),
        ],
        check=True,
    )


def _restore(platform: Platform, dump: Path, url: str) -> str:
    restore = pg_tool("pg_restore", check_server_version(platform.url))
    subprocess.run([restore, "--no-owner", "--exit-on-error", f"--dbname={libpq_url(url)}", str(dump)], check=True)
    return url


def test_backup_with_keyring_restores_everything_on_a_fresh_data_dir(
    loaded: tuple[Platform, list[dict[str, str]]], tmp_path: Path, scratch_database: Callable[[], str]
) -> None:
    platform, rows = loaded
    dump = tmp_path / "backup" / "rempart.dump"
    dump.parent.mkdir()
    _dump(platform, dump)
    fresh = tmp_path / "fresh"
    (fresh / "keys").mkdir(parents=True)
    shutil.copy2(platform.settings.resolved_keyring_path, fresh / "keys" / "keyring.json")
    url = _restore(platform, dump, scratch_database())
    settings = platform.settings.model_copy(update={"database_url": url, "data_dir": fresh, "keyring_path": None})
    restored = open_platform(settings)
    try:
        assert everyone(restored, rows) == everyone(platform, rows)
        assert all(everyone(restored, rows))
    finally:
        restored.close()


def test_older_backup_restored_after_shred_stays_unreadable(
    loaded: tuple[Platform, list[dict[str, str]]], tmp_path: Path, scratch_database: Callable[[], str]
) -> None:
    platform, rows = loaded
    dump = tmp_path / "before-shred.dump"
    _dump(platform, dump)
    with platform.session() as session:
        service.shred_insurer(session, platform.keystore, amc_number=AMC_A, audit=platform.audit.for_platform("test"))
        session.commit()
    url = _restore(platform, dump, scratch_database())
    settings = platform.settings.model_copy(update={"database_url": url})
    restored = open_platform(settings)  # same (current) keyring: the KEK is gone from it
    try:
        with restored.session() as session, pytest.raises(KeyUnavailableError):
            service.find_by_card(
                session,
                restored.keystore,
                amc_number=AMC_A,
                member_number=rows[0]["member_number"],
                birth_date=dt.date(1980, 5, 17),
                birth_rank=1,
            )
    finally:
        restored.close()


def test_losing_the_keyring_loses_the_data(loaded: tuple[Platform, list[dict[str, str]]], tmp_path: Path) -> None:
    platform, rows = loaded
    settings = platform.settings.model_copy(update={"keyring_path": tmp_path / "empty" / "keyring.json"})
    blind = open_platform(settings)
    try:
        with blind.session() as session, pytest.raises(KeyUnavailableError):
            service.find_by_card(
                session,
                blind.keystore,
                amc_number=AMC_A,
                member_number=rows[0]["member_number"],
                birth_date=dt.date(1980, 5, 17),
                birth_rank=1,
            )
    finally:
        blind.close()


def test_reindex_resizes_blind_indexes_and_lookups_still_work(
    loaded: tuple[Platform, list[dict[str, str]]],
) -> None:
    platform, rows = loaded
    with platform.session() as session:
        before = session.scalars(select(Beneficiary.card_bidx).order_by(Beneficiary.id)).all()
        assert (
            rekey.reindex_insurer(
                session,
                platform.keystore,
                amc_number=AMC_A,
                expected_population=40,
                audit=platform.audit.for_platform("test"),
            )
            == 40
        )
        insurer = service.get_insurer(session, AMC_A)
        assert insurer.index_bits == 4  # 40 people: about 3 candidates per lookup
        after = session.scalars(select(Beneficiary.card_bidx).order_by(Beneficiary.id)).all()
    assert before != after and max(v for v in after if v is not None) < 16
    assert all(everyone(platform, rows))
    with platform.session() as session:
        twins = service.find_by_member_nir(session, platform.keystore, member_nir=rows[0]["member_nir"],
                                           birth_date=dt.date(2018, 2, 9), birth_rank=2)  # fmt: skip
        assert [t.first_name for t in twins] == ["Hugo"]
