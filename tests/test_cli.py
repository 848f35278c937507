"""The `rempart` command line, end to end against a real database."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from rempart.cli.main import app
from rempart.settings import get_settings

from feedkit import AMC_A, SCHEDULE_ESSENTIEL, SIREN_A, families, write_feed

pytestmark = pytest.mark.integration


@pytest.fixture
def cli(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    monkeypatch.setenv("REMPART_DATABASE_URL", database_url)
    monkeypatch.setenv("REMPART_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("REMPART_IMPORT_WORKERS", "1")
    monkeypatch.setattr("rempart.cli.main.out", Console(width=200))  # tables unsqueezed
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


def test_help_lists_the_commands(cli: CliRunner) -> None:
    result = cli.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("seed", "serve", "import", "insurer", "keys", "db"):
        assert command in result.output


def test_insurer_schedule_import_and_keys(cli: CliRunner, tmp_path: Path) -> None:
    assert (
        cli.invoke(
            app, ["insurer", "add", AMC_A, "--name", "Mutuelle A", "--siren", SIREN_A, "--expected-population", "5000"]
        ).exit_code
        == 0
    )
    schedule = tmp_path / "essentiel.json"
    schedule.write_text(json.dumps(SCHEDULE_ESSENTIEL))
    loaded = cli.invoke(app, ["import", "schedule", str(schedule), "--insurer", AMC_A, "--valid-from", "2025-01-01"])
    assert loaded.exit_code == 0, loaded.output
    again = cli.invoke(app, ["import", "schedule", str(schedule), "--insurer", AMC_A, "--valid-from", "2025-01-01"])
    assert "unchanged" in again.output

    feed = write_feed(tmp_path / "feed.csv", families(4))
    imported = cli.invoke(app, ["import", "beneficiaries", str(feed), "--insurer", AMC_A, "--actor", "tests"])
    assert imported.exit_code == 0, imported.output
    summary = json.loads(imported.stdout[imported.stdout.index("{") :])
    assert (summary["status"], summary["inserted"]) == ("applied", 16)

    rows = families(2)
    rows[5]["birth_date"] = "31/02/2001"
    bad = cli.invoke(app, ["import", "beneficiaries", str(write_feed(tmp_path / "bad.csv", rows)), "--insurer", AMC_A])
    assert bad.exit_code == 1
    assert "bad.csv: line 7, column birth_date: not a real calendar date" in bad.output

    assert cli.invoke(app, ["keys", "rotate"]).exit_code == 0
    rewrap = cli.invoke(app, ["keys", "rewrap"])
    assert rewrap.exit_code == 0 and "20 rows re-encrypted" in rewrap.output
    assert "retired data keys: [" in cli.invoke(app, ["keys", "retire"]).output
    status = cli.invoke(app, ["keys", "status"]).output
    assert "retired" in status and "active" in status


def test_shred_needs_confirmation(cli: CliRunner) -> None:
    cli.invoke(
        app, ["insurer", "add", AMC_A, "--name", "Mutuelle A", "--siren", SIREN_A, "--expected-population", "5000"]
    )
    refused = cli.invoke(app, ["insurer", "shred", AMC_A])
    assert refused.exit_code == 2 and "--yes" in refused.output
    done = cli.invoke(app, ["insurer", "shred", AMC_A, "--yes"])
    assert done.exit_code == 0 and "shredded" in done.output
    listed = cli.invoke(app, ["insurer", "list"]).output
    assert "shredded" in listed


def test_schedule_errors_name_the_field(cli: CliRunner, tmp_path: Path) -> None:
    cli.invoke(
        app, ["insurer", "add", AMC_A, "--name", "Mutuelle A", "--siren", SIREN_A, "--expected-population", "5000"]
    )
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"code": "X", "rules": [{"domain": "optical", "kind": "flat", "amount": "12.345"}]}))
    result = cli.invoke(app, ["import", "schedule", str(bad), "--insurer", AMC_A, "--valid-from", "2025-01-01"])
    assert result.exit_code == 1
    assert "schedule.rules.0.amount" in result.output and "two decimals" in result.output


def test_backup_and_restore_commands(
    cli: CliRunner, tmp_path: Path, scratch_database: Callable[[], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    cli.invoke(app, ["insurer", "add", AMC_A, "--name", "Mutuelle A", "--siren", SIREN_A, "--expected-population", "9"])
    backup = cli.invoke(app, ["db", "backup", str(tmp_path / "backup")])
    assert backup.exit_code == 0, backup.output
    assert oct((tmp_path / "backup" / "rempart.dump").stat().st_mode & 0o777) == "0o600"

    monkeypatch.setenv("REMPART_DATABASE_URL", scratch_database())
    get_settings.cache_clear()
    restored = cli.invoke(app, ["db", "restore", str(tmp_path / "backup")])
    assert restored.exit_code == 0, restored.output
    assert "Mutuelle A" in cli.invoke(app, ["insurer", "list"]).output
