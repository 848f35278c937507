"""Insurer beneficiary feeds: decoding, dialect sniffing and row validation (pure, no I/O
beyond reading the stream it is given).

A feed is CSV, UTF-8 (with or without BOM), comma or semicolon separated, with a header
row naming at least FEED_COLUMNS (order free, extra columns ignored). See
docs/feeds.md for each column. Problems name the line, the column and the reason;
values are masked because they are personal data.
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from rempart.registry.identifiers import IdentifierError, check_nir_matches_birth, mask, parse_nir

FEED_COLUMNS = (
    "member_number",
    "member_nir",
    "beneficiary_nir",
    "family_name",
    "first_name",
    "birth_name",
    "birth_date",
    "birth_rank",
    "relationship",
    "contract",
    "coverage_start",
    "coverage_end",
)
REQUIRED = frozenset(
    {"member_number", "member_nir", "family_name", "first_name", "birth_date", "relationship", "contract"}
)
RELATIONSHIPS = {
    "member": "member",
    "adherent": "member",
    "adhérent": "member",
    "assure": "member",
    "assuré": "member",
    "spouse": "spouse",
    "conjoint": "spouse",
    "child": "child",
    "enfant": "child",
    "other": "other",
    "autre": "other",
}
MAX_FIELD_CHARS = 200
MAX_LINE_BYTES = 8192
FUTURE_COVERAGE_DAYS = 366

_MEMBER_NUMBER = re.compile(r"[0-9A-Z]{1,20}")
_CONTRACT = re.compile(r"[0-9A-Za-z_.-]{1,40}")
# Letters (any script's letters via \w minus digits and underscore), spaces, hyphens, apostrophes, dots.
_NAME = re.compile(r"(?:[^\W\d_]|[ '’.-])+")
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_FR_DATE = re.compile(r"\d{2}/\d{2}/\d{4}")


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class FeedFormatError(ValueError):
    """The file as a whole cannot be read (encoding, header, structure)."""


@dataclass(frozen=True, slots=True)
class Problem:
    line: int
    column: str
    reason: str
    masked_value: str = ""

    def __str__(self) -> str:
        shown = f" (value {self.masked_value})" if self.masked_value else ""
        return f"line {self.line}, column {self.column}: {self.reason}{shown}"


class FeedRow(NamedTuple):
    """One validated, normalised row (a named tuple: it crosses process boundaries)."""

    line: int
    member_number: str
    member_nir: str
    beneficiary_nir: str | None
    family_name: str
    first_name: str
    birth_name: str | None
    birth_date: dt.date
    birth_rank: int
    relationship: str
    contract: str
    coverage_start: dt.date
    coverage_end: dt.date | None

    @property
    def beneficiary_key(self) -> tuple[str, dt.date, int]:
        """What identifies a beneficiary within an insurer (what the card carries)."""
        return (self.member_number, self.birth_date, self.birth_rank)


# -- decoding -----------------------------------------------------------------------------


def decoded_lines(stream: Readable, *, chunk_bytes: int = 1 << 20) -> Iterator[str]:
    """Yield text lines (with their newline) from a UTF-8 stream, BOM stripped, in constant memory."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="strict")
    consumed = 0
    line_no = 1
    pending = ""
    first = True
    while True:
        block = stream.read(chunk_bytes)
        final = not block
        try:
            text = decoder.decode(block, final=final)
        except UnicodeDecodeError as exc:
            offset = consumed + exc.start
            raise FeedFormatError(
                f"not UTF-8: invalid byte at offset {offset} (around line {line_no + pending.count(chr(10))}); "
                "feeds must be UTF-8, with or without BOM (re-export the file as UTF-8)"
            ) from None
        consumed += len(block)
        if first and text:
            if text.startswith("\ufeff"):
                text = text[1:]
            first = False
        if "\x00" in text:
            raise FeedFormatError("the file contains NUL bytes: it is not a CSV text file (UTF-16 or binary?)")
        pending += text
        # Split on "\n" only: other Unicode line breaks may legitimately sit inside a field.
        *complete, pending = pending.split("\n")
        for line in complete:
            line_no += 1
            yield line + "\n"
        if final:
            if pending:
                yield pending
            return


def sniff_delimiter(header_line: str) -> str:
    commas, semicolons = header_line.count(","), header_line.count(";")
    if commas == semicolons == 0:
        raise FeedFormatError("line 1: the header has no ',' or ';' separator")
    return ";" if semicolons > commas else ","


@dataclass(frozen=True, slots=True)
class FeedLayout:
    delimiter: str
    columns: tuple[str, ...]


def read_header(line: str) -> FeedLayout:
    delimiter = sniff_delimiter(line)
    if len(line) > MAX_LINE_BYTES:
        raise FeedFormatError(
            f"line 1: header longer than {MAX_LINE_BYTES} characters (lines must end with LF or CRLF)"
        )
    try:
        columns = tuple(c.strip().lower() for c in next(csv.reader([line], delimiter=delimiter, strict=True)))
    except (csv.Error, StopIteration) as exc:
        raise FeedFormatError(f"line 1: malformed header ({exc})") from None
    missing = [c for c in FEED_COLUMNS if c not in columns]
    if missing:
        raise FeedFormatError(f"line 1: header lacks column(s) {', '.join(missing)}")
    duplicated = sorted({c for c in columns if columns.count(c) > 1})
    if duplicated:
        raise FeedFormatError(f"line 1: column(s) {', '.join(duplicated)} appear twice")
    return FeedLayout(delimiter, columns)


def group_records(lines: Iterable[str], delimiter: str) -> Iterator[tuple[int, list[str]] | Problem]:
    """Group physical lines into CSV records (a quoted field may span lines), cheaply: only
    lines holding a quote are looked at by the CSV parser here. The fields themselves are
    parsed by `parse_record`, in the import workers."""
    line_no = 1
    buffer: list[str] = []
    start = 2
    for line in lines:
        line_no += 1
        if not buffer:
            start = line_no
        if len(line) > MAX_LINE_BYTES:
            yield Problem(start, "(line)", f"line longer than {MAX_LINE_BYTES} characters")
            buffer = []
            continue
        buffer.append(line)
        if len(buffer) == 1 and '"' not in line:
            yield start, buffer
            buffer = []
            continue
        try:
            for _ in csv.reader(buffer, delimiter=delimiter, strict=True):
                pass
        except csv.Error as exc:
            unfinished = "EOF" in str(exc) or "unexpected end of data" in str(exc)
            if unfinished and len(buffer) < 5:
                continue  # a quoted field spanning lines; keep reading
            yield Problem(start, "(line)", f"malformed CSV ({exc})")
            buffer = []
            continue
        yield start, buffer
        buffer = []
    if buffer:
        yield Problem(start, "(line)", "the file ends inside a quoted field (truncated file?)")


def parse_record(start: int, lines: list[str], layout: FeedLayout) -> list[str] | Problem | None:
    """The fields of one record, a structural problem, or None for a blank line."""
    try:
        records = list(csv.reader(lines, delimiter=layout.delimiter, strict=True))
    except csv.Error as exc:
        return Problem(start, "(line)", f"malformed CSV ({exc})")
    if not records or all(not cell.strip() for cell in records[0]):
        return None
    fields = records[0]
    if len(records) > 1 or len(fields) != len(layout.columns):
        return Problem(
            start,
            "(line)",
            f"{len(fields)} fields where the header has {len(layout.columns)} (truncated or shifted row?)",
        )
    return fields


def parse_records(items: list[tuple[int, list[str]]], layout: FeedLayout) -> list[list[str] | Problem | None]:
    """`parse_record` for a whole block: one CSV parser over every single-line record (the
    common case), falling back to record by record when a record spans lines or is malformed."""
    if all(len(lines) == 1 for _, lines in items):
        try:
            records = list(csv.reader([lines[0] for _, lines in items], delimiter=layout.delimiter, strict=True))
        except csv.Error:
            records = []
        if len(records) == len(items):
            width = len(layout.columns)
            out: list[list[str] | Problem | None] = []
            for (start, _), fields in zip(items, records, strict=True):
                if not fields or all(not cell.strip() for cell in fields):
                    out.append(None)
                elif len(fields) != width:
                    out.append(
                        Problem(
                            start,
                            "(line)",
                            f"{len(fields)} fields where the header has {width} (truncated or shifted row?)",
                        )
                    )
                else:
                    out.append(fields)
            return out
    return [parse_record(start, lines, layout) for start, lines in items]


def split_records(lines: Iterable[str], layout: FeedLayout) -> Iterator[tuple[int, list[str] | Problem]]:
    """Parse CSV records after the header; yields (line number, fields or a structural problem)."""
    for item in group_records(lines, layout.delimiter):
        if isinstance(item, Problem):
            yield item.line, item
            continue
        parsed = parse_record(*item, layout)
        if parsed is not None:
            yield item[0], parsed


# -- row validation -----------------------------------------------------------------------


def _date(value: str) -> dt.date:
    try:
        if _ISO_DATE.fullmatch(value):
            return dt.date.fromisoformat(value)
        if _FR_DATE.fullmatch(value):
            day, month, year = value.split("/")
            return dt.date(int(year), int(month), int(day))
    except ValueError as exc:
        raise ValueError(f"not a real calendar date ({exc})") from None
    raise ValueError("expected a date as YYYY-MM-DD or DD/MM/YYYY")


def _name(value: str, column: str, problems: list[Problem], line: int, *, required: bool) -> str | None:
    value = " ".join(value.split())
    if not value:
        if required:
            problems.append(Problem(line, column, "required"))
        return None
    if len(value) > 100:
        problems.append(Problem(line, column, "longer than 100 characters"))
    elif not _NAME.fullmatch(value):
        problems.append(Problem(line, column, "only letters, spaces, hyphens and apostrophes", mask(value)))
    return value


def validate_row(line: int, values: dict[str, str], *, today: dt.date) -> FeedRow | list[Problem]:
    problems: list[Problem] = []
    v = {k: (values.get(k) or "").strip() for k in FEED_COLUMNS}

    for column in FEED_COLUMNS:
        if len(v[column]) > MAX_FIELD_CHARS:
            problems.append(Problem(line, column, f"longer than {MAX_FIELD_CHARS} characters"))
            v[column] = ""
    for column in REQUIRED:
        if not v[column] and not any(p.column == column for p in problems):
            problems.append(Problem(line, column, "required"))

    member_number = v["member_number"].replace(" ", "").upper()
    if member_number and not _MEMBER_NUMBER.fullmatch(member_number):
        problems.append(Problem(line, "member_number", "1 to 20 letters or digits", mask(member_number)))

    birth_date: dt.date | None = None
    if v["birth_date"]:
        try:
            birth_date = _date(v["birth_date"])
            if birth_date > today:
                problems.append(Problem(line, "birth_date", "in the future", mask(v["birth_date"])))
            elif birth_date.year < 1890:
                problems.append(Problem(line, "birth_date", "before 1890", mask(v["birth_date"])))
        except ValueError as exc:
            problems.append(Problem(line, "birth_date", str(exc), mask(v["birth_date"])))
            birth_date = None

    relationship = RELATIONSHIPS.get(v["relationship"].lower()) if v["relationship"] else None
    if v["relationship"] and relationship is None:
        problems.append(Problem(line, "relationship", "expected member, spouse, child or other"))

    member_nir = beneficiary_nir = None
    for column in ("member_nir", "beneficiary_nir"):
        if not v[column]:
            continue
        try:
            nir = parse_nir(v[column])
        except IdentifierError as exc:
            problems.append(Problem(line, column, exc.message, mask(v[column])))
            continue
        if column == "member_nir":
            member_nir = nir
        else:
            beneficiary_nir = nir
    if relationship == "member" and member_nir and beneficiary_nir and member_nir.value != beneficiary_nir.value:
        problems.append(Problem(line, "beneficiary_nir", "the member's own NIR must equal member_nir"))
    own_nir = beneficiary_nir or (member_nir if relationship == "member" else None)
    if own_nir and birth_date:
        try:
            check_nir_matches_birth(own_nir, birth_date)
        except IdentifierError as exc:
            column = "beneficiary_nir" if beneficiary_nir else "member_nir"
            problems.append(Problem(line, column, exc.message))
    if relationship == "member" and beneficiary_nir is None and v["beneficiary_nir"] == "" and member_nir:
        beneficiary_nir = member_nir

    rank = 1
    if v["birth_rank"]:
        if v["birth_rank"].isdigit() and 1 <= int(v["birth_rank"]) <= 9:
            rank = int(v["birth_rank"])
        else:
            problems.append(Problem(line, "birth_rank", "expected a whole number from 1 to 9"))

    family_name = _name(v["family_name"], "family_name", problems, line, required=False)
    first_name = _name(v["first_name"], "first_name", problems, line, required=False)
    birth_name = _name(v["birth_name"], "birth_name", problems, line, required=False)

    contract = v["contract"]
    if contract and not _CONTRACT.fullmatch(contract):
        problems.append(Problem(line, "contract", "a contract code is 1 to 40 letters, digits, '_', '.', '-'"))

    start = end = None
    if not v["coverage_start"]:
        problems.append(Problem(line, "coverage_start", "required"))
    for column in ("coverage_start", "coverage_end"):
        if not v[column]:
            continue
        try:
            parsed = _date(v[column])
        except ValueError as exc:
            problems.append(Problem(line, column, str(exc)))
            continue
        if column == "coverage_start":
            start = parsed
        else:
            end = parsed
    if start and (start - today).days > FUTURE_COVERAGE_DAYS:
        problems.append(Problem(line, "coverage_start", f"more than {FUTURE_COVERAGE_DAYS} days ahead"))
    if start and end and end < start:
        problems.append(Problem(line, "coverage_end", "before coverage_start (dates in the wrong order)"))
    if start and birth_date and end and end < birth_date:
        problems.append(Problem(line, "coverage_end", "before the beneficiary's birth date"))

    if problems:
        return problems
    assert member_nir and birth_date and relationship and family_name and first_name and start
    return FeedRow(
        line=line,
        member_number=member_number,
        member_nir=member_nir.value,
        beneficiary_nir=beneficiary_nir.value if beneficiary_nir else None,
        family_name=family_name,
        first_name=first_name,
        birth_name=birth_name,
        birth_date=birth_date,
        birth_rank=rank,
        relationship=relationship,
        contract=contract,
        coverage_start=start,
        coverage_end=end,
    )
