"""Insurer feed import against a real PostgreSQL: all or nothing, idempotent, clear reports."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from rempart.platform import Platform
from rempart.registry import service

from feedkit import AMC_A, AMC_B, csv_text, families, family, write_feed
from registry_helpers import TODAY, counts, run_import, snapshot, two_insurers

pytestmark = pytest.mark.integration


@pytest.fixture
def ready(platform: Platform) -> Platform:
    two_insurers(platform)
    return platform


def test_clean_import_then_same_file_changes_nothing(ready: Platform, tmp_path: Path) -> None:
    feed = write_feed(tmp_path / "a.csv", families(30))
    first = run_import(ready, feed)
    assert (first.status, first.inserted, first.problem_count) == ("applied", 120, 0)
    assert counts(ready) == (30, 120, 120)
    before = snapshot(ready)

    second = run_import(ready, feed)
    assert (second.status, second.inserted, second.updated, second.unchanged) == ("applied", 0, 0, 120)
    assert snapshot(ready) == before
    assert first.file_sha256 == second.file_sha256


def test_imported_people_are_found_by_their_card_and_nir(ready: Platform, tmp_path: Path) -> None:
    rows = family("M0000042", order=42)
    run_import(ready, write_feed(tmp_path / "a.csv", rows))
    with ready.session() as session:
        twin = service.find_by_card(
            session,
            ready.keystore,
            amc_number=AMC_A,
            member_number="M0000042",
            birth_date=dt.date(2018, 2, 9),
            birth_rank=2,
        )
        assert twin is not None and twin.first_name == "Hugo" and twin.nir is None
        by_member_nir = service.find_by_member_nir(
            session,
            ready.keystore,
            member_nir=rows[0]["member_nir"],
            birth_date=dt.date(2018, 2, 9),
            birth_rank=1,
        )
        assert [b.first_name for b in by_member_nir] == ["Léa"]
        spouse = service.find_by_nir(
            session, ready.keystore, nir=rows[1]["beneficiary_nir"], birth_date=dt.date(1982, 11, 3)
        )
        assert [(s.first_name, s.birth_name) for s in spouse] == [("Camille", "Rossi")]
        # A wrong birth date or rank finds nobody.
        assert (
            service.find_by_card(
                session,
                ready.keystore,
                amc_number=AMC_A,
                member_number="M0000042",
                birth_date=dt.date(2018, 2, 10),
                birth_rank=2,
            )
            is None
        )
        assert (
            service.find_by_card(
                session,
                ready.keystore,
                amc_number=AMC_A,
                member_number="M0000042",
                birth_date=dt.date(2018, 2, 9),
                birth_rank=3,
            )
            is None
        )


def test_semicolon_and_bom_are_accepted(ready: Platform, tmp_path: Path) -> None:
    feed = write_feed(tmp_path / "a.csv", families(2), delimiter=";", bom=True)
    result = run_import(ready, feed)
    assert (result.status, result.inserted) == ("applied", 8)


def test_delta_updates_identity_and_closes_coverage(ready: Platform, tmp_path: Path) -> None:
    rows = families(3)
    run_import(ready, write_feed(tmp_path / "a.csv", rows))
    changed = [dict(rows[0], first_name="Julian"), dict(rows[1], coverage_end="2026-06-30"), rows[2]]
    result = run_import(ready, write_feed(tmp_path / "b.csv", changed))
    assert (result.status, result.updated, result.unchanged, result.inserted) == ("applied", 2, 1, 0)
    with ready.session() as session:
        member = service.find_by_card(
            session,
            ready.keystore,
            amc_number=AMC_A,
            member_number="M0000001",
            birth_date=dt.date(1980, 5, 17),
            birth_rank=1,
        )
        assert member is not None and member.first_name == "Julian"
        spouse = service.find_by_nir(
            session, ready.keystore, nir=rows[1]["beneficiary_nir"], birth_date=dt.date(1982, 11, 3)
        )[0]
        assert service.coverage_periods(session, beneficiary_id=spouse.id) == [
            ("ESSENTIEL", dt.date(2025, 1, 1), dt.date(2026, 6, 30))
        ]


def test_contract_change_opens_new_period_and_closes_the_old(ready: Platform, tmp_path: Path) -> None:
    with ready.session() as session:
        service.load_schedule(
            session,
            amc_number=AMC_A,
            data={
                "code": "CONFORT",
                "rules": [{"domain": "pharmacy", "kind": "br_percent_incl", "percent": 100}],
            },
            valid_from=dt.date(2025, 1, 1),
        )
        session.commit()
    rows = family("M0000001", order=1)
    run_import(ready, write_feed(tmp_path / "a.csv", rows))
    moved = [dict(r, contract="CONFORT", coverage_start="2026-01-01") for r in rows]
    result = run_import(ready, write_feed(tmp_path / "b.csv", moved))
    assert (result.status, result.updated) == ("applied", 4)
    with ready.session() as session:
        member = service.find_by_nir(
            session, ready.keystore, nir=rows[0]["member_nir"], birth_date=dt.date(1980, 5, 17)
        )[0]
        assert service.coverage_periods(session, beneficiary_id=member.id) == [
            ("ESSENTIEL", dt.date(2025, 1, 1), dt.date(2025, 12, 31)),
            ("CONFORT", dt.date(2026, 1, 1), None),
        ]


BAD_CASES = {
    "nir_key": (lambda r: r.update(member_nir=r["member_nir"][:13] + "00"), "member_nir", "key"),
    "dates_order": (lambda r: r.update(coverage_end="2024-12-31"), "coverage_end", "before coverage_start"),
    "unknown_contract": (lambda r: r.update(contract="NOPE"), "contract", "unknown contract NOPE"),
    "other_insurer_contract": (
        lambda r: r.update(contract="BONLEVEL"),
        "contract",
        "belongs to insurer 87654321",
    ),
    "bad_date": (lambda r: r.update(birth_date="1980-02-30"), "birth_date", "date"),
    "future_birth": (lambda r: r.update(birth_date="2030-01-01"), "birth_date", "in the future"),
    "rank": (lambda r: r.update(birth_rank="0"), "birth_rank", "1 to 9"),
    "relationship": (lambda r: r.update(relationship="cousin"), "relationship", "expected member"),
    "name_digits": (lambda r: r.update(first_name="J3an"), "first_name", "letters"),
    "missing_name": (lambda r: r.update(family_name=""), "family_name", "required"),
    "nir_birth_mismatch": (lambda r: r.update(beneficiary_nir=r["member_nir"]), "beneficiary_nir", "birth"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_a_bad_row_rejects_the_whole_file_with_line_and_column(ready: Platform, tmp_path: Path, case: str) -> None:
    mutate, column, reason = BAD_CASES[case]
    rows = families(5)
    mutate(rows[6])  # line 8 of the file (header is line 1)
    result = run_import(ready, write_feed(tmp_path / "bad.csv", rows))
    assert result.status == "rejected"
    assert counts(ready) == (0, 0, 0)
    problem = result.problems[0]
    assert (problem.line, problem.column) == (8, column), result.problems
    assert reason in problem.reason
    report = result.report_path.read_text() if result.report_path else ""
    assert "line 8" in report
    for value in rows[6].values():  # personal values never appear in the report in full
        if len(value) >= 8 and value not in ("ESSENTIEL", "BONLEVEL"):
            assert value not in report


def test_accept_partial_applies_only_good_rows(ready: Platform, tmp_path: Path) -> None:
    rows = families(5)
    rows[6]["coverage_end"] = "2024-12-31"
    rows[9]["member_nir"] = "1234"
    result = run_import(ready, write_feed(tmp_path / "bad.csv", rows), accept_partial=True)
    assert result.status == "partial"
    assert (result.inserted, result.rejected) == (18, 2)
    assert counts(ready)[1] == 18


def test_duplicate_rows_are_reported_with_the_first_line(ready: Platform, tmp_path: Path) -> None:
    rows = families(2)
    rows.append(dict(rows[1]))
    result = run_import(ready, write_feed(tmp_path / "dup.csv", rows))
    assert result.status == "rejected" and counts(ready) == (0, 0, 0)
    assert result.problems[0].line == 10 and "duplicate of line 3" in result.problems[0].reason


def test_duplicates_across_chunks_are_found(ready: Platform, tmp_path: Path) -> None:
    rows = families(60)  # 240 rows: two chunks of 200
    rows.append(dict(rows[0]))
    result = run_import(ready, write_feed(tmp_path / "dup.csv", rows))
    assert result.status == "rejected"
    assert [(p.line, "duplicate of line 2" in p.reason) for p in result.problems] == [(242, True)]


def test_file_for_another_insurer_is_refused(ready: Platform, tmp_path: Path) -> None:
    rows = families(3, contract="BONLEVEL")
    result = run_import(ready, write_feed(tmp_path / "b.csv", rows), amc=AMC_A)
    assert result.status == "rejected" and result.problem_count == 12
    assert all("belongs to insurer 87654321" in p.reason for p in result.problems)


def test_member_of_another_insurer_is_refused(ready: Platform, tmp_path: Path) -> None:
    rows = families(2)
    assert run_import(ready, write_feed(tmp_path / "b.csv", rows), amc=AMC_B).status == "applied"
    result = run_import(ready, write_feed(tmp_path / "a.csv", rows), amc=AMC_A)
    assert result.status == "rejected"
    assert {p.column for p in result.problems} == {"member_number"}
    assert "belongs to insurer 87654321" in result.problems[0].reason


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"member_number,family_name\nM1,X\n", "header lacks column"),
        (
            csv_text(families(1)).encode("latin-1", errors="replace").replace(b"L\xe9a", b"L\xe9a"),
            "not UTF-8",
        ),
        (csv_text(families(1)).encode("utf-16"), "not UTF-8"),
        (b"", "empty"),
    ],
)
def test_unreadable_files_are_refused_whole(ready: Platform, tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "f.csv"
    path.write_bytes(content)
    result = run_import(ready, path)
    assert result.status == "rejected" and result.fatal is not None and message in result.fatal
    assert counts(ready) == (0, 0, 0)


def test_truncated_file_is_rejected(ready: Platform, tmp_path: Path) -> None:
    data = csv_text(families(3)).encode()
    path = tmp_path / "cut.csv"
    path.write_bytes(data[: len(data) - 25])
    result = run_import(ready, path)
    assert result.status == "rejected" and counts(ready) == (0, 0, 0)
    assert result.problems[-1].line == 13


def test_full_feed_closes_absent_people_within_the_safety_share(ready: Platform, tmp_path: Path) -> None:
    rows = families(30)
    run_import(ready, write_feed(tmp_path / "all.csv", rows))
    # One family (4 of 120 people, 3%) left the insurer.
    result = run_import(ready, write_feed(tmp_path / "full.csv", rows[4:]), mode="full")
    assert (result.status, result.coverage_closed, result.unchanged) == ("applied", 4, 116)
    with ready.session() as session:
        gone = service.find_by_card(
            session,
            ready.keystore,
            amc_number=AMC_A,
            member_number="M0000001",
            birth_date=dt.date(1980, 5, 17),
            birth_rank=1,
        )
        assert gone is not None
        assert service.coverage_periods(session, beneficiary_id=gone.id) == [
            ("ESSENTIEL", dt.date(2025, 1, 1), TODAY - dt.timedelta(days=1))
        ]


def test_full_feed_beyond_the_safety_share_needs_force(ready: Platform, tmp_path: Path) -> None:
    rows = families(10)
    run_import(ready, write_feed(tmp_path / "all.csv", rows))
    before = snapshot(ready)
    refused = run_import(ready, write_feed(tmp_path / "half.csv", rows[:20]), mode="full")
    assert refused.status == "rejected" and refused.fatal and "--force" in refused.fatal
    assert snapshot(ready) == before
    forced = run_import(ready, write_feed(tmp_path / "half.csv", rows[:20]), mode="full", force=True)
    assert (forced.status, forced.coverage_closed) == ("applied", 20)


def test_crash_mid_import_leaves_nothing_and_can_be_rerun(
    ready: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rempart.registry import importer

    feed = write_feed(tmp_path / "a.csv", families(100))  # two chunks
    original = importer._Run.apply
    calls = {"n": 0}

    def crash_on_second(self: importer._Run, prepared: list) -> None:  # type: ignore[type-arg]
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("power cut")
        original(self, prepared)

    monkeypatch.setattr(importer._Run, "apply", crash_on_second)
    with pytest.raises(RuntimeError, match="power cut"):
        run_import(ready, feed)
    assert counts(ready) == (0, 0, 0)
    monkeypatch.setattr(importer._Run, "apply", original)
    assert run_import(ready, feed).inserted == 400


def test_parallel_workers_give_the_same_result(ready: Platform, tmp_path: Path) -> None:
    ready.settings.import_workers = 2
    result = run_import(ready, write_feed(tmp_path / "a.csv", families(120)))
    assert (result.status, result.inserted) == ("applied", 480)
    assert counts(ready) == (120, 480, 480)


def test_each_import_is_recorded(ready: Platform, tmp_path: Path) -> None:
    from sqlalchemy import select

    from rempart.registry.models import ImportRecord

    feed = write_feed(tmp_path / "a.csv", families(2))
    run_import(ready, feed, actor="ops@insurer")
    bad = write_feed(tmp_path / "b.csv", [dict(families(1)[0], contract="NOPE")])
    run_import(ready, bad, actor="ops@insurer")
    with ready.session() as session:
        records = session.scalars(select(ImportRecord).order_by(ImportRecord.started_at)).all()
        assert [(r.status, r.rows_inserted, r.rows_rejected, r.actor) for r in records] == [
            ("applied", 8, 0, "ops@insurer"),
            ("rejected", 0, 1, "ops@insurer"),
        ]
        assert len(records[0].file_sha256) == 64


def test_member_nir_correction_after_rotation_keeps_the_family_readable(ready: Platform, tmp_path: Path) -> None:
    from rempart.registry import rekey

    from registry_helpers import person_nir_for

    rows = families(2)
    run_import(ready, write_feed(tmp_path / "a.csv", rows))
    with ready.session() as session:
        ready.keystore.rotate(session, f"insurer-{AMC_A}")
        session.commit()
    corrected_nir = person_nir_for(1, dt.date(1980, 5, 17), 77)
    fixed = [dict(r, member_nir=corrected_nir) for r in rows[:4]]
    fixed[0]["beneficiary_nir"] = corrected_nir
    result = run_import(ready, write_feed(tmp_path / "b.csv", fixed[:1]))  # only the member's own row
    assert (result.status, result.updated) == ("applied", 1)
    with ready.session() as session:
        twins = service.find_by_member_nir(session, ready.keystore, member_nir=corrected_nir,
                                           birth_date=dt.date(2018, 2, 9), birth_rank=2)  # fmt: skip
        assert [t.first_name for t in twins] == ["Hugo"]
        assert service.find_by_member_nir(session, ready.keystore, member_nir=rows[0]["member_nir"],
                                          birth_date=dt.date(2018, 2, 9), birth_rank=2) == []  # fmt: skip
        member = service.find_by_card(session, ready.keystore, amc_number=AMC_A, member_number="M0000001",
                                      birth_date=dt.date(1980, 5, 17), birth_rank=1)  # fmt: skip
        assert member is not None and member.member_nir == corrected_nir
        assert rekey.rewrap(session, ready.keystore, audit=ready.audit.for_platform("test")) > 0
        assert rekey.retire_unused(session, ready.keystore) != []
    ready.keystore.forget()
    assert run_import(ready, write_feed(tmp_path / "c.csv", fixed)).unchanged == 4


def test_one_member_with_two_nirs_in_a_file_is_refused_across_blocks(ready: Platform, tmp_path: Path) -> None:
    from registry_helpers import person_nir_for

    rows = families(60)
    late = dict(rows[1], member_nir=person_nir_for(1, dt.date(1980, 5, 17), 99))
    rows.append(late)  # line 242, another block than the member's first rows
    rows[1] = dict(rows[1], birth_rank="3")
    result = run_import(ready, write_feed(tmp_path / "a.csv", rows))
    assert result.status == "rejected"
    assert [(p.line, p.column) for p in result.problems] == [(242, "member_nir")]
    assert "differs from line 2" in result.problems[0].reason


def test_a_correction_overlapping_a_later_period_is_refused(ready: Platform, tmp_path: Path) -> None:
    row = family("M0000001", order=1)[0]
    first = dict(row, coverage_end="2025-06-30")
    second = dict(row, coverage_start="2025-07-01")
    run_import(ready, write_feed(tmp_path / "a.csv", [first]))
    run_import(ready, write_feed(tmp_path / "b.csv", [second]))
    widened = dict(row, coverage_end="")  # starts 2025-01-01, open-ended: would overlap July's period
    result = run_import(ready, write_feed(tmp_path / "c.csv", [widened]))
    assert result.status == "rejected"
    assert (result.problems[0].column, "overlap" in result.problems[0].reason) == ("coverage_end", True)


def test_full_with_accept_partial_is_refused(ready: Platform, tmp_path: Path) -> None:
    from rempart.registry.importer import ImportRefused

    with pytest.raises(ImportRefused, match="cannot be combined"):
        run_import(ready, write_feed(tmp_path / "a.csv", families(1)), mode="full", accept_partial=True)


def test_parallel_and_serial_imports_store_the_same_people(ready: Platform, tmp_path: Path) -> None:
    rows = families(120)
    ready.settings.import_workers = 2
    assert run_import(ready, write_feed(tmp_path / "a.csv", rows)).inserted == 480
    ready.settings.import_workers = 1
    again = run_import(ready, write_feed(tmp_path / "a.csv", rows))
    assert (again.unchanged, again.inserted, again.updated) == (480, 0, 0)
    with ready.session() as session:
        for r in rows[::37]:
            found = service.find_by_card(session, ready.keystore, amc_number=AMC_A, member_number=r["member_number"],
                                         birth_date=dt.date.fromisoformat(r["birth_date"]),
                                         birth_rank=int(r["birth_rank"]))  # fmt: skip
            assert found is not None
            assert (found.first_name, found.family_name, found.nir or "") == (
                r["first_name"],
                r["family_name"],
                r["beneficiary_nir"] if r["relationship"] != "child" else "",
            )


def test_an_internal_error_is_recorded_and_applies_nothing(
    ready: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy import select

    from rempart.registry import importer
    from rempart.registry.models import ImportRecord

    def broken(self: importer._Run, prepared: list) -> None:  # type: ignore[type-arg]
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(importer._Run, "apply", broken)
    with pytest.raises(RuntimeError):
        run_import(ready, write_feed(tmp_path / "a.csv", families(2)))
    assert counts(ready) == (0, 0, 0)
    with ready.session() as session:
        record = session.scalars(select(ImportRecord)).one()
        assert record.status == "rejected"
