"""`rempart import beneficiaries`: an insurer's feed applied atomically, in constant memory.

How a file flows:
1. The file is decoded as UTF-8 and split into CSV records, hashed on the way.
2. Blocks of records go to worker processes that validate each row and seal it
   (encrypt its personal fields under fresh row ids, compute its blind indexes): the CPU
   heavy part, on every core.
3. The main process matches each block against the registry (blind-index candidates,
   decrypted and compared), decides insert / update / unchanged, and writes with COPY,
   all inside one transaction; a row that matches an existing person is re-sealed under
   that person's row id.
4. At the end the transaction commits only if the file is clean (or `accept_partial`);
   otherwise it rolls back and nothing of the file remains. A crash mid-way leaves
   nothing either, so the same command can simply be run again.
The import itself is recorded (who, when, file hash, counts) whatever the outcome.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import multiprocessing
import os
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, BinaryIO, Literal, NamedTuple

import psycopg
from sqlalchemy import select
from sqlalchemy.orm import Session

from rempart.audit.service import Recorder, stage_raw
from rempart.crypto import fields
from rempart.crypto.fields import DataKey
from rempart.crypto.keystore import IndexKeys, Keystore, kek_name_for_insurer
from rempart.db import copy_binary
from rempart.registry import sealing
from rempart.registry.feed import (
    FeedFormatError,
    FeedLayout,
    FeedRow,
    Problem,
    decoded_lines,
    group_records,
    parse_records,
    read_header,
    validate_row,
)
from rempart.registry.models import INSURER_ACTIVE, Contract, ImportRecord, Insurer

Mode = Literal["delta", "full"]
MAX_PROBLEMS_KEPT = 1000


class ImportRefused(Exception):
    """The import cannot start (unknown insurer, unreadable file...)."""


@dataclass(frozen=True)
class ImportOptions:
    mode: Mode = "delta"
    accept_partial: bool = False
    force: bool = False
    actor: str = "cli"
    today: dt.date = field(default_factory=dt.date.today)
    chunk_rows: int = 5000
    workers: int = 0
    max_closing_share: float = 0.10


@dataclass
class ImportResult:
    import_id: uuid.UUID
    file_name: str
    file_sha256: str = ""
    status: str = "rejected"
    rows_total: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    coverage_closed: int = 0
    problems: list[Problem] = field(default_factory=list)
    problem_count: int = 0
    fatal: str | None = None
    report_path: Path | None = None

    @property
    def applied(self) -> bool:
        return self.status in ("applied", "partial")


# -- worker side (pure) -------------------------------------------------------------------


# A block of records as the reader groups them: (first line, physical lines) or a problem.
Block = list[tuple[int, list[str]] | Problem]


@dataclass(frozen=True)
class SealingContext:
    amc_number: str
    insurer_id: uuid.UUID
    key_id: int
    key: bytes = field(repr=False)
    index: IndexKeys
    layout: FeedLayout
    today: dt.date


class Prepared(NamedTuple):
    """A validated row, sealed under fresh row ids, with its COPY tuples ready to send.

    A named tuple with ids as raw bytes: it crosses a process boundary per row, and plain
    tuples pickle several times faster than dataclasses holding UUID objects."""

    row: FeedRow
    member_id: bytes
    member_bidx: int
    member_copy: bytes | None  # None when an earlier row of the block already sealed this member
    beneficiary_id: bytes
    beneficiary_copy: bytes  # every column but member_id, which comes last


_worker_context: tuple[SealingContext, DataKey] | None = None

# Column order of the COPYs below: the prepared tuples follow it.
MEMBER_COLUMNS = "id, insurer_id, dek_id, member_number_ct, member_nir_ct, number_bidx"
BENEFICIARY_COLUMNS = (
    "id, insurer_id, dek_id, nir_ct, family_name_ct, first_name_ct, birth_name_ct, birth_date_ct, birth_rank,"
    " relationship, nir_bidx, card_bidx, member_nir_bidx, member_id"
)
PERIOD_COLUMNS = "insurer_id, beneficiary_id, contract_id, start_date, end_date"


def _init_worker(context: SealingContext) -> None:
    global _worker_context
    _worker_context = (context, DataKey.from_bytes(context.key_id, context.key))


def _new_ids(count: int) -> list[uuid.UUID]:
    raw = os.urandom(16 * count)
    return [uuid.UUID(bytes=raw[i : i + 16], version=4) for i in range(0, 16 * count, 16)]


def prepare_block(block: Block) -> list[Prepared | list[Problem]]:
    assert _worker_context is not None
    context, key = _worker_context
    insurer = copy_binary.uuid_(context.insurer_id)
    dek = copy_binary.int4(key.id)
    ids = _new_ids(2 * len(block))
    members: dict[str, tuple[uuid.UUID, int, str]] = {}
    out: list[Prepared | list[Problem]] = []
    grouped = [item for item in block if not isinstance(item, Problem)]
    parsed = iter(parse_records(grouped, context.layout))
    for n, item in enumerate(block):
        if isinstance(item, Problem):
            out.append([item])
            continue
        line = item[0]
        record = next(parsed)
        if record is None:
            continue  # blank line
        if isinstance(record, Problem):
            out.append([record])
            continue
        row = validate_row(line, dict(zip(context.layout.columns, record, strict=True)), today=context.today)
        if isinstance(row, list):
            out.append(row)
            continue
        member_copy = None
        known = members.get(row.member_number)
        if known is None or row.member_nir != known[2]:
            m = sealing.seal_member(key, context.index, ids[2 * n], row)
            members[row.member_number] = (m.id, m.number_bidx, row.member_nir)
            member_copy = b"".join(
                (
                    copy_binary.count(6),
                    copy_binary.uuid_(m.id),
                    insurer,
                    dek,
                    copy_binary.bytea(m.member_number_ct),
                    copy_binary.bytea(m.member_nir_ct),
                    copy_binary.int4(m.number_bidx),
                )
            )
        member_id, member_bidx, _ = members[row.member_number]
        b = sealing.seal_beneficiary(key, context.index, context.amc_number, ids[2 * n + 1], row)
        beneficiary_copy = b"".join(
            (
                copy_binary.count(14),
                copy_binary.uuid_(b.id),
                insurer,
                dek,
                copy_binary.bytea(b.nir_ct),
                copy_binary.bytea(b.family_name_ct),
                copy_binary.bytea(b.first_name_ct),
                copy_binary.bytea(b.birth_name_ct),
                copy_binary.bytea(b.birth_date_ct),
                copy_binary.int2(row.birth_rank),
                copy_binary.text(row.relationship),
                copy_binary.int4(b.nir_bidx),
                copy_binary.int4(b.card_bidx),
                copy_binary.int4(b.member_nir_bidx),
            )
        )
        out.append(Prepared(row, member_id.bytes, member_bidx, member_copy, b.id.bytes, beneficiary_copy))
    return out


# -- main side ----------------------------------------------------------------------------


class _HashingReader:
    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.digest = hashlib.sha256()
        self.bytes_read = 0

    def read(self, size: int = -1) -> bytes:
        block = self.raw.read(size)
        self.digest.update(block)
        self.bytes_read += len(block)
        return block


@dataclass
class _Existing:
    id: uuid.UUID
    member_id: uuid.UUID
    dek_id: int
    values: dict[str, str | None]
    relationship: str
    periods: list[tuple[uuid.UUID, uuid.UUID, dt.date, dt.date | None]]  # id, contract, start, end


class _Run:
    """One import: the state shared by the chunks of a file."""

    def __init__(
        self,
        *,
        conn: psycopg.Connection[Any],
        session: Session,
        keystore: Keystore,
        insurer: Insurer,
        contracts: dict[str, uuid.UUID],
        foreign_contracts: dict[str, list[str]],
        key: DataKey,
        index: IndexKeys,
        options: ImportOptions,
        result: ImportResult,
        report: IO[str],
        other_insurers: list[tuple[uuid.UUID, str, IndexKeys]],
    ) -> None:
        self.other_insurers = other_insurers
        self.conn = conn
        self.session = session
        self.keystore = keystore
        self.insurer = insurer
        self.contracts = contracts
        self.foreign_contracts = foreign_contracts
        self.key = key
        self.index = index
        self.options = options
        self.result = result
        self.report = report

    # problems -----------------------------------------------------------------------

    def problem(self, problem: Problem) -> None:
        self.result.problem_count += 1
        if len(self.result.problems) < MAX_PROBLEMS_KEPT:
            self.result.problems.append(problem)
        self.report.write(str(problem) + "\n")

    def reject(self, problems: list[Problem]) -> None:
        self.result.rejected += 1
        for p in problems:
            self.problem(p)

    # decryption helpers ---------------------------------------------------------------

    def _open(self, table: str, column: str, row_id: uuid.UUID, dek_id: int, ct: bytes | None) -> str | None:
        if ct is None:
            return None
        return fields.decrypt(self.keystore.field_key(self.session, dek_id), table, column, str(row_id), ct)

    # one block ------------------------------------------------------------------------

    def apply(self, prepared: list[Prepared | list[Problem]]) -> None:
        rows: list[tuple[Prepared, uuid.UUID]] = []
        for item in prepared:
            self.result.rows_total += 1
            if isinstance(item, list):
                self.reject(item)
                continue
            contract_id = self.contracts.get(item.row.contract)
            if contract_id is None:
                owners = self.foreign_contracts.get(item.row.contract)
                reason = (
                    f"contract {item.row.contract} belongs to insurer {', '.join(owners)}, not "
                    f"{self.insurer.amc_number}: is this file for another insurer?"
                    if owners
                    else f"unknown contract {item.row.contract} for insurer {self.insurer.amc_number} "
                    "(load its schedule first)"
                )
                self.reject([Problem(item.row.line, "contract", reason)])
                continue
            rows.append((item, contract_id))
        if not rows:
            return
        member_copies = {p.member_id: p.member_copy for p in prepared if isinstance(p, Prepared) and p.member_copy}
        members = self._existing_members({p.row.member_number: p.member_bidx for p, _ in rows})
        elsewhere = self._members_of_other_insurers(
            {p.row.member_number: p.row.member_nir for p, _ in rows if p.row.member_number not in members}
        )
        existing = self._existing_beneficiaries([m[0] for m in members.values()])
        seen = self._seen([b.id for b in existing.values()])

        new_members: dict[str, tuple[uuid.UUID, FeedRow]] = {}
        new_beneficiaries: dict[tuple[uuid.UUID, dt.date, int], uuid.UUID] = {}
        member_updates: list[sealing.SealedMember] = []
        index_updates: list[tuple[int, uuid.UUID]] = []
        touched = self._touched_members([m[0] for m in members.values()])
        already = set(touched)
        insert_members: list[bytes] = []
        insert_beneficiaries: list[bytes] = []
        update_beneficiaries: list[tuple[sealing.SealedBeneficiary, str]] = []
        insert_periods: list[tuple[uuid.UUID, uuid.UUID, dt.date, dt.date | None]] = []
        update_periods: list[tuple[uuid.UUID | None, dt.date | None, uuid.UUID]] = []
        seen_now: dict[uuid.UUID, int] = {}

        for prepared_row, contract_id in rows:
            row = prepared_row.row
            member_changed = False
            # The member ------------------------------------------------------------------
            if row.member_number in elsewhere:
                self.reject(
                    [
                        Problem(
                            row.line,
                            "member_number",
                            f"this member (same member number and NIR) belongs "
                            f"to insurer {elsewhere[row.member_number]}: is this file for another insurer?",
                        )
                    ]
                )
                continue
            if row.member_number in members:
                member_id, member_nir = members[row.member_number]
                if member_nir != row.member_nir:
                    first_line = touched.get(member_id)
                    if first_line is not None:
                        self.reject(
                            [Problem(row.line, "member_nir", f"differs from line {first_line} for the same member")]
                        )
                        continue
                    # A correction of the member's NIR: the member is re-sealed whole, and every
                    # beneficiary's member-NIR index follows (children are found by it).
                    member_updates.append(sealing.seal_member(self.key, self.index, member_id, row))
                    member_changed = True
                    members[row.member_number] = (member_id, row.member_nir)
                    for (owner, birth_date, rank), other in existing.items():
                        if owner == member_id:
                            index_updates.append(
                                (sealing.member_nir_index(self.index, row.member_nir, birth_date, rank), other.id)
                            )
                touched.setdefault(member_id, row.line)
            elif row.member_number in new_members:
                member_id, first = new_members[row.member_number]
                if first.member_nir != row.member_nir:
                    self.reject(
                        [Problem(row.line, "member_nir", f"differs from line {first.line} for the same member")]
                    )
                    continue
            else:
                # The block sealed each member once, on its first valid row (maybe rejected since).
                member_id = uuid.UUID(bytes=prepared_row.member_id)
                new_members[row.member_number] = (member_id, row)
                insert_members.append(member_copies[prepared_row.member_id])
                touched[member_id] = row.line

            # The beneficiary -------------------------------------------------------------
            natural = (member_id, row.birth_date, row.birth_rank)
            current = existing.get(natural)
            if current is not None:
                beneficiary_id = current.id
            elif natural in new_beneficiaries:
                beneficiary_id = new_beneficiaries[natural]
            else:
                beneficiary_id = uuid.UUID(bytes=prepared_row.beneficiary_id)
            # One row per beneficiary and file: a second one is a duplicate, whatever it says.
            first_line = seen_now.get(beneficiary_id) or seen.get(beneficiary_id)
            if first_line is not None:
                self.reject(
                    [
                        Problem(
                            row.line,
                            "(line)",
                            f"duplicate of line {first_line}: same member number, "
                            "birth date and rank (one row per beneficiary and file)",
                        )
                    ]
                )
                continue

            if current is None:
                new_beneficiaries[natural] = beneficiary_id
                insert_beneficiaries.append(prepared_row.beneficiary_copy + copy_binary.uuid_(member_id))
                insert_periods.append((beneficiary_id, contract_id, row.coverage_start, row.coverage_end))
                self.result.inserted += 1
                seen_now[beneficiary_id] = row.line
                continue

            changed = member_changed
            wanted = _identity(row)
            if wanted != current.values or row.relationship != current.relationship:
                sealed = sealing.seal_beneficiary(self.key, self.index, self.insurer.amc_number, current.id, row)
                update_beneficiaries.append((sealed, row.relationship))
                changed = True
            coverage = _coverage_change(current.periods, contract_id, row)
            if isinstance(coverage, Problem):
                self.reject([coverage])
                continue
            for period_id, end in coverage.closes:
                update_periods.append((contract_id if period_id == coverage.same_start_id else None, end, period_id))
            if coverage.update_same_start:
                changed = True
            if coverage.closes and not coverage.update_same_start:
                changed = True
            if coverage.insert:
                insert_periods.append((current.id, contract_id, row.coverage_start, row.coverage_end))
                changed = True
            if changed:
                self.result.updated += 1
            else:
                self.result.unchanged += 1
            seen_now[beneficiary_id] = row.line

        self._write(
            insert_members,
            insert_beneficiaries,
            update_beneficiaries,
            member_updates,
            index_updates,
            {m: line for m, line in touched.items() if m not in already},
            insert_periods,
            update_periods,
            seen_now,
        )

    # reads ---------------------------------------------------------------------------------

    def _existing_members(self, wanted: dict[str, int]) -> dict[str, tuple[uuid.UUID, str]]:
        found: dict[str, tuple[uuid.UUID, str]] = {}
        cursor = self.conn.execute(
            "SELECT id, dek_id, member_number_ct, member_nir_ct FROM members"
            " WHERE insurer_id = %s AND number_bidx = ANY(%s)",
            (self.insurer.id, list(set(wanted.values()))),
        )
        for member_id, dek_id, number_ct, nir_ct in cursor:
            number = self._open(sealing.MEMBERS, "member_number", member_id, dek_id, number_ct)
            if number in wanted:
                nir = self._open(sealing.MEMBERS, "member_nir", member_id, dek_id, nir_ct)
                assert number is not None and nir is not None
                found[number] = (member_id, nir)
        return found

    def _members_of_other_insurers(self, wanted: dict[str, str]) -> dict[str, str]:
        """Member numbers that another insurer holds with the same member NIR."""
        found: dict[str, str] = {}
        for other_id, amc, index in self.other_insurers:
            if not wanted:
                break
            by_bidx: dict[int, list[str]] = {}
            for number in wanted:
                by_bidx.setdefault(sealing.member_number_index(index, number), []).append(number)
            cursor = self.conn.execute(
                "SELECT id, dek_id, member_number_ct, member_nir_ct FROM members"
                " WHERE insurer_id = %s AND number_bidx = ANY(%s)",
                (other_id, list(by_bidx)),
            )
            for member_id, dek_id, number_ct, nir_ct in cursor.fetchall():
                opened = self._open(sealing.MEMBERS, "member_number", member_id, dek_id, number_ct)
                if (
                    opened is not None
                    and opened in wanted
                    and wanted[opened] == self._open(sealing.MEMBERS, "member_nir", member_id, dek_id, nir_ct)
                ):
                    found[opened] = amc
            wanted = {n: nir for n, nir in wanted.items() if n not in found}
        return found

    def _existing_beneficiaries(self, member_ids: list[uuid.UUID]) -> dict[tuple[uuid.UUID, dt.date, int], _Existing]:
        if not member_ids:
            return {}
        out: dict[tuple[uuid.UUID, dt.date, int], _Existing] = {}
        cursor = self.conn.execute(
            "SELECT id, member_id, dek_id, nir_ct, family_name_ct, first_name_ct, birth_name_ct, birth_date_ct,"
            " birth_rank, relationship FROM beneficiaries WHERE member_id = ANY(%s)",
            (member_ids,),
        )
        for (
            bid,
            member_id,
            dek_id,
            nir_ct,
            fam_ct,
            first_ct,
            birth_name_ct,
            bd_ct,
            rank,
            relationship,
        ) in cursor:
            t = sealing.BENEFICIARIES
            birth_date = self._open(t, "birth_date", bid, dek_id, bd_ct)
            assert birth_date is not None
            values = {
                "nir": self._open(t, "nir", bid, dek_id, nir_ct),
                "family_name": self._open(t, "family_name", bid, dek_id, fam_ct),
                "first_name": self._open(t, "first_name", bid, dek_id, first_ct),
                "birth_name": self._open(t, "birth_name", bid, dek_id, birth_name_ct),
            }
            out[(member_id, dt.date.fromisoformat(birth_date), rank)] = _Existing(
                bid, member_id, dek_id, values, relationship, []
            )
        by_id = {b.id: b for b in out.values()}
        periods = self.conn.execute(
            "SELECT id, beneficiary_id, contract_id, start_date, end_date FROM coverage_periods"
            " WHERE beneficiary_id = ANY(%s) ORDER BY start_date",
            (list(by_id),),
        )
        for pid, bid, contract_id, start, end in periods:
            by_id[bid].periods.append((pid, contract_id, start, end))
        return out

    def _touched_members(self, member_ids: list[uuid.UUID]) -> dict[uuid.UUID, int]:
        """Members an earlier row of this file already wrote, with that row's line."""
        if not member_ids:
            return {}
        cursor = self.conn.execute(
            "SELECT member_id, line FROM import_members WHERE member_id = ANY(%s)", (member_ids,)
        )
        return dict(cursor.fetchall())

    def _seen(self, beneficiary_ids: list[uuid.UUID]) -> dict[uuid.UUID, int]:
        if not beneficiary_ids:
            return {}
        cursor = self.conn.execute(
            "SELECT beneficiary_id, line FROM import_seen WHERE beneficiary_id = ANY(%s)", (beneficiary_ids,)
        )
        return dict(cursor.fetchall())

    # writes --------------------------------------------------------------------------------

    def _write(
        self,
        insert_members: list[bytes],
        insert_beneficiaries: list[bytes],
        update_beneficiaries: list[tuple[sealing.SealedBeneficiary, str]],
        member_updates: list[sealing.SealedMember],
        index_updates: list[tuple[int, uuid.UUID]],
        touched: dict[uuid.UUID, int],
        insert_periods: list[tuple[uuid.UUID, uuid.UUID, dt.date, dt.date | None]],
        update_periods: list[tuple[uuid.UUID | None, dt.date | None, uuid.UUID]],
        seen_now: dict[uuid.UUID, int],
    ) -> None:
        insurer = copy_binary.uuid_(self.insurer.id)
        periods = [
            b"".join(
                (
                    copy_binary.count(5),
                    insurer,
                    copy_binary.uuid_(bid),
                    copy_binary.uuid_(cid),
                    copy_binary.date(start),
                    copy_binary.date(end),
                )
            )
            for bid, cid, start, end in insert_periods
        ]
        with self.conn.cursor() as cur:
            for table, columns, tuples in (
                ("members", MEMBER_COLUMNS, insert_members),
                ("beneficiaries", BENEFICIARY_COLUMNS, insert_beneficiaries),
                ("coverage_periods", PERIOD_COLUMNS, periods),
            ):
                if tuples:
                    with cur.copy(f"COPY {table} ({columns}) FROM STDIN (FORMAT BINARY)") as copy:
                        copy.write(copy_binary.HEADER + b"".join(tuples) + copy_binary.TRAILER)
            if member_updates:
                cur.executemany(
                    "UPDATE members SET dek_id = %s, member_number_ct = %s, member_nir_ct = %s, number_bidx = %s"
                    " WHERE id = %s",
                    [(m.dek_id, m.member_number_ct, m.member_nir_ct, m.number_bidx, m.id) for m in member_updates],
                )
            if index_updates:
                cur.executemany("UPDATE beneficiaries SET member_nir_bidx = %s WHERE id = %s", index_updates)
            if touched:
                with cur.copy("COPY import_members (member_id, line) FROM STDIN") as copy:
                    for member_id, line in touched.items():
                        copy.write_row((member_id, line))
            if update_beneficiaries:
                cur.executemany(
                    "UPDATE beneficiaries SET dek_id = %s, nir_ct = %s, family_name_ct = %s, first_name_ct = %s,"
                    " birth_name_ct = %s, birth_date_ct = %s, relationship = %s, nir_bidx = %s, card_bidx = %s,"
                    " member_nir_bidx = %s, updated_at = now() WHERE id = %s",
                    [
                        (
                            b.dek_id,
                            b.nir_ct,
                            b.family_name_ct,
                            b.first_name_ct,
                            b.birth_name_ct,
                            b.birth_date_ct,
                            relationship,
                            b.nir_bidx,
                            b.card_bidx,
                            b.member_nir_bidx,
                            b.id,
                        )
                        for b, relationship in update_beneficiaries
                    ],
                )
            if update_periods:
                cur.executemany(
                    "UPDATE coverage_periods SET contract_id = COALESCE(%s, contract_id), end_date = %s WHERE id = %s",
                    update_periods,
                )
            if seen_now:
                with cur.copy("COPY import_seen (beneficiary_id, line) FROM STDIN") as copy:
                    for bid, line in seen_now.items():
                        copy.write_row((bid, line))

    # the end of a full feed -------------------------------------------------------------------

    def close_absent(self) -> int | Problem:
        """A full feed: close the coverage of everyone the file did not mention."""
        today = self.options.today
        running = (
            "FROM coverage_periods p JOIN beneficiaries b ON b.id = p.beneficiary_id"
            " WHERE b.insurer_id = %(insurer)s AND (p.end_date IS NULL OR p.end_date >= %(today)s)"
        )
        absent = " AND NOT EXISTS (SELECT 1 FROM import_seen s WHERE s.beneficiary_id = p.beneficiary_id)"
        params = {"insurer": self.insurer.id, "today": today, "import": self.result.import_id}
        covered = self.conn.execute(f"SELECT count(DISTINCT p.beneficiary_id) {running}", params).fetchone()
        closing = self.conn.execute(f"SELECT count(DISTINCT p.beneficiary_id) {running}{absent}", params).fetchone()
        assert covered is not None and closing is not None
        total, count = int(covered[0]), int(closing[0])
        if total and count / total > self.options.max_closing_share and not self.options.force:
            return Problem(
                0,
                "(file)",
                f"a full feed would close the coverage of {count} of {total} covered beneficiaries "
                f"({count / total:.0%} > {self.options.max_closing_share:.0%}); check the file, or use --force",
            )
        # Periods not yet started are removed; running ones end yesterday.
        self.conn.execute(
            f"DELETE FROM coverage_periods WHERE id IN (SELECT p.id {running}{absent} AND p.start_date >= %(today)s)",
            params,
        )
        self.conn.execute(
            "UPDATE coverage_periods SET end_date = %(today)s::date - 1, closed_by_import_id = %(import)s"
            f" WHERE id IN (SELECT p.id {running}{absent})",
            params,
        )
        return count


def _identity(row: FeedRow) -> dict[str, str | None]:
    return {
        "nir": row.beneficiary_nir,
        "family_name": row.family_name,
        "first_name": row.first_name,
        "birth_name": row.birth_name,
    }


@dataclass
class _CoverageChange:
    closes: list[tuple[uuid.UUID, dt.date | None]]
    insert: bool
    update_same_start: bool
    same_start_id: uuid.UUID | None


def _coverage_change(
    periods: list[tuple[uuid.UUID, uuid.UUID, dt.date, dt.date | None]], contract_id: uuid.UUID, row: FeedRow
) -> _CoverageChange | Problem:
    """What a row does to a beneficiary's coverage periods: correct the period that starts on
    the same day, or open a new one (closing an earlier open period the day before)."""
    start, end = row.coverage_start, row.coverage_end
    for pid, pcontract, pstart, pend in periods:
        if pstart == start:
            if pcontract == contract_id and pend == end:
                return _CoverageChange([], False, False, pid)
            later = [other for other in periods if other[2] > start and (end is None or end >= other[2])]
            if later:
                return Problem(
                    row.line,
                    "coverage_end",
                    "this correction would overlap a later coverage period of this beneficiary; "
                    "give an end date before it",
                )
            return _CoverageChange([(pid, end)], False, True, pid)
    closes: list[tuple[uuid.UUID, dt.date | None]] = []
    for pid, _contract, pstart, pend in periods:
        if pstart < start and (pend is None or pend >= start):
            closes.append((pid, start - dt.timedelta(days=1)))
        elif pstart > start and (end is None or end >= pstart):
            return Problem(
                row.line,
                "coverage_start",
                "overlaps a later coverage period of this beneficiary; correct that period (same start date) "
                "or close this one before it",
            )
    return _CoverageChange(closes, True, False, None)


def _records(lines: Iterator[str], delimiter: str, size: int) -> Iterator[Block]:
    block: Block = []
    for item in group_records(lines, delimiter):
        block.append(item)
        if len(block) >= size:
            yield block
            block = []
    if block:
        yield block


def _pack(prepared: list[Prepared | list[Problem]]) -> list[tuple[Any, ...] | list[Problem]]:
    """Flatten a prepared block for the trip back to the main process: tuples of str, int and
    bytes (dates as ordinals) pickle several times faster than nested objects and dates."""
    packed: list[tuple[Any, ...] | list[Problem]] = []
    for item in prepared:
        if isinstance(item, list):
            packed.append(item)
            continue
        r = item.row
        packed.append(
            (
                *r[:7],
                r.birth_date.toordinal(),
                *r[8:11],
                r.coverage_start.toordinal(),
                r.coverage_end.toordinal() if r.coverage_end else 0,
                *item[1:],
            )
        )
    return packed


def _unpack(packed: list[tuple[Any, ...] | list[Problem]]) -> list[Prepared | list[Problem]]:
    fromordinal = dt.date.fromordinal
    out: list[Prepared | list[Problem]] = []
    for item in packed:
        if isinstance(item, list):
            out.append(item)
            continue
        row = FeedRow._make(
            (
                *item[:7],
                fromordinal(item[7]),
                *item[8:11],
                fromordinal(item[11]),
                fromordinal(item[12]) if item[12] else None,
            )
        )
        out.append(Prepared(row, *item[13:]))
    return out


def _prepare_packed(block: Block) -> list[tuple[Any, ...] | list[Problem]]:
    return _pack(prepare_block(block))


def _pipelined(
    blocks: Iterator[Block],
    context: SealingContext,
    workers: int,
) -> Iterator[list[Prepared | list[Problem]]]:
    """Prepare blocks on `workers` processes, a bounded number in flight, results in order."""
    if workers <= 1:
        _init_worker(context)
        for block in blocks:
            yield prepare_block(block)
        return
    with ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("fork"),
        initializer=_init_worker,
        initargs=(context,),
    ) as pool:
        pending: deque[Future[list[tuple[Any, ...] | list[Problem]]]] = deque()
        for block in blocks:
            pending.append(pool.submit(_prepare_packed, block))
            if len(pending) >= workers * 2:
                yield _unpack(pending.popleft().result())
        while pending:
            yield _unpack(pending.popleft().result())


def import_beneficiaries(
    *,
    conn: psycopg.Connection[Any],
    session: Session,
    keystore: Keystore,
    path: Path,
    amc_number: str,
    options: ImportOptions,
    report_dir: Path,
    audit: Recorder,
    on_progress: Callable[[int], None] | None = None,
) -> ImportResult:
    """Apply one feed file. `conn` is a dedicated psycopg connection (the file's transaction);
    `session` reads keys and reference data and records the import."""
    if options.mode == "full" and options.accept_partial:
        raise ImportRefused(
            "--full cannot be combined with --accept-partial: a rejected row would close that person's coverage"
        )
    started = dt.datetime.now(dt.UTC)
    result = ImportResult(import_id=uuid.uuid4(), file_name=path.name)
    insurer = session.scalars(select(Insurer).where(Insurer.amc_number == amc_number)).one_or_none()
    if insurer is None:
        raise ImportRefused(f"no insurer with AMC number {amc_number}")
    if insurer.status != INSURER_ACTIVE:
        raise ImportRefused(f"insurer {amc_number} was shredded: it can receive no data")
    contracts = {c.code: c.id for c in session.scalars(select(Contract).where(Contract.insurer_id == insurer.id))}
    foreign: dict[str, list[str]] = {}
    for code, amc in session.execute(
        select(Contract.code, Insurer.amc_number).join(Insurer).where(Insurer.id != insurer.id)
    ):
        foreign.setdefault(code, []).append(amc)
    kek = kek_name_for_insurer(amc_number)
    key = keystore.active_field_key(session, kek)
    index = keystore.index_keys(session, kek, insurer.index_bits)
    other_insurers = [
        (
            other.id,
            other.amc_number,
            keystore.index_keys(session, kek_name_for_insurer(other.amc_number), other.index_bits),
        )
        for other in session.scalars(select(Insurer).where(Insurer.id != insurer.id, Insurer.status == INSURER_ACTIVE))
    ]
    session.commit()

    report_dir.mkdir(parents=True, exist_ok=True)
    result.report_path = report_dir / f"import-{result.import_id}.txt"
    workers = options.workers or (os.cpu_count() or 1)
    report_fd = os.open(result.report_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(path, "rb") as raw, open(report_fd, "w", encoding="utf-8") as report:
        report.write(f"Import {result.import_id} of {path.name} for insurer {amc_number} ({options.mode})\n")
        reader = _HashingReader(raw)
        run = _Run(
            conn=conn,
            session=session,
            keystore=keystore,
            insurer=insurer,
            contracts=contracts,
            foreign_contracts=foreign,
            key=key,
            index=index,
            options=options,
            result=result,
            report=report,
            other_insurers=other_insurers,
        )
        try:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(hashtext('rempart-import'), hashtext(%s))", (amc_number,))
                # Hold the data key for the whole transaction: `keys retire` waits for us, and
                # a key retired or shredded meanwhile is refused here rather than written under.
                state = conn.execute("SELECT state FROM data_keys WHERE id = %s FOR SHARE", (key.id,)).fetchone()
                if state is None or state[0] != "active":
                    raise FeedFormatError("the insurer's data key changed while the import was starting: run it again")
                conn.execute("CREATE TEMP TABLE import_seen (beneficiary_id uuid PRIMARY KEY, line int) ON COMMIT DROP")
                conn.execute("CREATE TEMP TABLE import_members (member_id uuid PRIMARY KEY, line int) ON COMMIT DROP")
                lines = decoded_lines(reader)
                header = next(lines, None)
                if header is None or not header.strip():
                    raise FeedFormatError("the file is empty: expected a header row")
                layout = read_header(header)
                context = SealingContext(amc_number, insurer.id, key.id, key.key, index, layout, options.today)
                for prepared in _pipelined(_records(lines, layout.delimiter, options.chunk_rows), context, workers):
                    run.apply(prepared)
                    if on_progress:
                        on_progress(reader.bytes_read)
                if options.mode == "full" and (result.problem_count == 0 or options.accept_partial):
                    closed = run.close_absent()
                    if isinstance(closed, Problem):
                        run.problem(closed)
                        result.fatal = closed.reason
                    else:
                        result.coverage_closed = closed
                clean = result.problem_count == 0
                if result.fatal or not (clean or options.accept_partial):
                    raise _Rollback
                result.status = "applied" if clean else "partial"
                # One event for the file, committed with what it applied.
                stage_raw(conn, [audit.bulk(
                    "import.beneficiaries", purpose="insurer-feed",
                    count=result.inserted + result.updated + result.coverage_closed,
                    detail={"import": str(result.import_id), "insurer": amc_number, "mode": options.mode,
                            "status": result.status, "sha256_so_far": reader.digest.hexdigest(),
                            "rows": str(result.rows_total)},
                )])  # fmt: skip
        except _Rollback:
            result.status = "rejected"
        except FeedFormatError as exc:
            result.status, result.fatal = "rejected", str(exc)
            report.write(f"file: {exc}\n")
        except Exception as exc:
            # Nothing was applied (the transaction rolled back); the attempt is still recorded.
            result.status, result.fatal = "rejected", f"internal error ({type(exc).__name__}); nothing was applied"
            report.write(f"file: {result.fatal}\n")
            _record(session, result, insurer, options, path, started)
            raise
        # Hash the rest of the file, so the record names the whole file even when we stopped early.
        while reader.read(1 << 20):
            pass
        result.file_sha256 = reader.digest.hexdigest()
        if result.status == "rejected":
            result.inserted = result.updated = result.unchanged = result.coverage_closed = 0
        report.write(
            f"status {result.status}: {result.rows_total} rows, {result.inserted} inserted, {result.updated} updated,"
            f" {result.unchanged} unchanged, {result.rejected} rejected, {result.coverage_closed} coverage closed\n"
        )
    _record(session, result, insurer, options, path, started)
    return result


def _record(
    session: Session, result: ImportResult, insurer: Insurer, options: ImportOptions, path: Path, started: dt.datetime
) -> None:
    session.rollback()
    session.add(
        ImportRecord(
            id=result.import_id,
            insurer_id=insurer.id,
            kind="beneficiaries",
            mode=options.mode,
            actor=options.actor,
            file_name=path.name,
            file_sha256=result.file_sha256,
            status=result.status,
            rows_total=result.rows_total,
            rows_inserted=result.inserted,
            rows_updated=result.updated,
            rows_unchanged=result.unchanged,
            rows_rejected=result.rejected,
            coverage_closed=result.coverage_closed,
            started_at=started,
            finished_at=dt.datetime.now(dt.UTC),
        )
    )
    session.commit()


class _Rollback(Exception):
    pass
