"""Any bytes given as a feed give a report or a clean import: never a crash, never half a file."""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rempart.platform import Platform
from rempart.registry.feed import FeedFormatError, Problem, decoded_lines, read_header, split_records, validate_row

from feedkit import csv_text, families
from registry_helpers import counts, run_import, snapshot, two_insurers

VALID = csv_text(families(3)).encode()


@st.composite
def mutated_feeds(draw: st.DrawFn) -> bytes:
    """A valid feed with a few random byte edits: the malformed files insurers really send."""
    data = bytearray(VALID)
    for _ in range(draw(st.integers(1, 6))):
        position = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["insert", "delete", "replace", "truncate"]))
        noise = draw(st.binary(min_size=1, max_size=4))
        if action == "insert":
            data[position:position] = noise
        elif action == "delete":
            del data[position : position + len(noise)]
        elif action == "replace":
            data[position : position + len(noise)] = noise
        else:
            del data[position:]
    return bytes(data)


feeds = st.one_of(st.binary(max_size=600), mutated_feeds(), st.just(VALID))


def parse_all(data: bytes) -> list[object]:
    """The pure pipeline a worker and the reader run; returns rows or problems."""
    lines = decoded_lines(io.BytesIO(data), chunk_bytes=7)
    header = next(lines, None)
    if header is None:
        return []
    layout = read_header(header)
    out: list[object] = []
    for line, record in split_records(lines, layout):
        if isinstance(record, Problem):
            out.append(record)
        else:
            out.append(validate_row(line, dict(zip(layout.columns, record, strict=True)), today=dt.date(2026, 11, 23)))
    return out


@settings(max_examples=400, deadline=None)
@given(feeds)
def test_parsing_never_crashes(data: bytes) -> None:
    try:
        results = parse_all(data)
    except FeedFormatError as exc:
        message = str(exc)
        assert message
        return
    for result in results:
        problems = result if isinstance(result, list) else [result] if isinstance(result, Problem) else []
        for problem in problems:
            assert problem.line >= 2 and problem.column and problem.reason


@pytest.mark.integration
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=feeds)
def test_import_of_any_bytes_is_clean_or_rejected_whole(platform: Platform, tmp_path: Path, data: bytes) -> None:
    if not counts(platform)[2] and not hasattr(platform, "_fuzz_ready"):
        two_insurers(platform)
        platform._fuzz_ready = True  # type: ignore[attr-defined]
    before = snapshot(platform)
    path = tmp_path / "fuzz.csv"
    path.write_bytes(data)
    result = run_import(platform, path)
    assert result.status in ("applied", "rejected")
    if result.status == "rejected":
        assert result.problem_count > 0 or result.fatal
        assert snapshot(platform) == before
    else:
        assert result.problem_count == 0
        assert result.inserted + result.updated + result.unchanged == result.rows_total
