"""`rempart`: the command-line door. Thin: parse, call one service function, print."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from rempart.platform import Platform, open_platform
from rempart.settings import get_settings


def _operator() -> str:
    """Who runs a command, as the audit log records it (the system user)."""
    return os.environ.get("USER") or "cli"


# Never print local variables on a crash: they may hold keys or personal data.
app = typer.Typer(
    help="Rempart: tiers-payant platform for French complementary health insurance.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
db_app = typer.Typer(help="Database: migrations, backup and restore.", no_args_is_help=True)
insurer_app = typer.Typer(help="Insurers (AMC): register, list, crypto-shred.", no_args_is_help=True)
import_app = typer.Typer(help="Insurer feeds: beneficiaries and guarantee schedules.", no_args_is_help=True)
keys_app = typer.Typer(help="Keys: rotate, rewrap, retire, status.", no_args_is_help=True)
audit_app = typer.Typer(help="Audit log: verify, checkpoints, proofs, who accessed what.", no_args_is_help=True)
prove_app = typer.Typer(help="Proofs an auditor checks with rempart/audit/verifier.py.", no_args_is_help=True)
coverage_app = typer.Typer(help="Coverage rules: run test vectors.", no_args_is_help=True)
audit_app.add_typer(prove_app, name="prove")
app.add_typer(db_app, name="db")
app.add_typer(insurer_app, name="insurer")
app.add_typer(import_app, name="import")
app.add_typer(keys_app, name="keys")
app.add_typer(audit_app, name="audit")
app.add_typer(coverage_app, name="coverage")

console = Console(stderr=True)
out = Console()


@contextmanager
def platform() -> Iterator[Platform]:
    p = open_platform()
    try:
        yield p
    finally:
        p.close()


def fail(message: str, code: int = 1) -> typer.Exit:
    console.print(f"[red]error:[/red] {message}")
    return typer.Exit(code)


# -- database ------------------------------------------------------------------------------


@db_app.command("migrate")
def db_migrate() -> None:
    """Bring the database schema up to date (also done by every command)."""
    with platform():
        console.print("schema up to date")


@db_app.command("backup")
def db_backup(
    target: Annotated[Path, typer.Argument(help="Folder to write the backup into (created).")],
) -> None:
    """Dump the database (pg_dump custom format). The keyring is NOT included: back it up
    separately (see docs/keys.md); a database backup alone is unreadable by design."""
    from rempart.db.server import check_server_version, libpq_url, pg_tool

    with platform() as p:
        target.mkdir(parents=True, exist_ok=True)
        dump = target / "rempart.dump"
        subprocess.run(
            [
                pg_tool("pg_dump", check_server_version(p.url)),
                "--format=custom",
                "--no-owner",
                f"--file={dump}",
                libpq_url(p.url),
            ],
            check=True,
        )
        os.chmod(dump, 0o600)
    console.print(f"database dumped to {dump}")


@db_app.command("restore")
def db_restore(
    source: Annotated[Path, typer.Argument(help="Folder written by `rempart db backup`.")],
) -> None:
    """Restore a dump into an empty database (a fresh data dir or an empty server)."""
    from rempart.db.server import check_server_version, libpq_url, pg_tool, resolve_database_url

    settings = get_settings()
    url = resolve_database_url(settings)
    restore = pg_tool("pg_restore", check_server_version(url))
    subprocess.run(
        [
            restore,
            "--no-owner",
            "--exit-on-error",
            f"--dbname={libpq_url(url)}",
            str(source / "rempart.dump"),
        ],
        check=True,
    )
    console.print("database restored")


# -- insurers ------------------------------------------------------------------------------


@insurer_app.command("add")
def insurer_add(
    amc: Annotated[str, typer.Argument(help="AMC number (8 to 10 digits).")],
    name: Annotated[str, typer.Option(help="Insurer's name.")],
    siren: Annotated[str, typer.Option(help="SIREN (9 digits).")],
    expected_population: Annotated[
        int, typer.Option(min=1, help="Beneficiaries this insurer will hold: sizes its blind indexes.")
    ],
) -> None:
    """Register an insurer and create its keys."""
    from rempart.registry import service

    with platform() as p, p.session() as session:
        try:
            insurer = service.register_insurer(
                session,
                p.keystore,
                amc_number=amc,
                name=name,
                siren=siren,
                expected_population=expected_population,
            )
        except service.RegistryError as exc:
            raise fail(str(exc)) from None
        session.commit()
        console.print(f"insurer {insurer.amc_number} registered ({insurer.index_bits}-bit blind indexes)")


@insurer_app.command("list")
def insurer_list() -> None:
    """List insurers with their population, state, and whether their blind indexes still fit."""
    from sqlalchemy import func, select

    from rempart.crypto.blind_index import bits_for_population, expected_candidates
    from rempart.registry.models import Beneficiary, Insurer

    with platform() as p, p.session() as session:
        table = Table("AMC", "name", "SIREN", "beneficiaries", "index bits", "candidates/lookup", "status")
        counts = dict(
            session.execute(select(Beneficiary.insurer_id, func.count()).group_by(Beneficiary.insurer_id)).all()
        )
        for insurer in session.scalars(select(Insurer).order_by(Insurer.amc_number)):
            rows = counts.get(insurer.id, 0)
            candidates = expected_candidates(rows, insurer.index_bits)
            # CipherSweet's rule: 2 <= C < sqrt(R). Outside it, the declared population was wrong.
            fits = rows < 1000 or 2 <= candidates < rows**0.5
            note = "" if fits else f" (re-size to {bits_for_population(rows)} bits)"
            table.add_row(insurer.amc_number, insurer.name, insurer.siren, str(rows), str(insurer.index_bits),
                          f"{candidates:.2f}{note}", insurer.status)  # fmt: skip
        out.print(table)


@insurer_app.command("reindex")
def insurer_reindex(
    amc: Annotated[str, typer.Argument(help="AMC number.")],
    expected_population: Annotated[int, typer.Option(min=1, help="The insurer's population now expected.")],
) -> None:
    """Re-size an insurer's blind indexes when `insurer list` says they no longer fit."""
    from rempart.registry import rekey

    with platform() as p, p.session() as session:
        try:
            done = rekey.reindex_insurer(
                session, p.keystore, amc_number=amc, expected_population=expected_population,
                audit=p.audit.for_platform("cli", operator=_operator()),
            )  # fmt: skip
        except ValueError as exc:
            raise fail(str(exc)) from None
    console.print(f"insurer {amc}: {done} beneficiaries re-indexed")


@insurer_app.command("shred")
def insurer_shred(
    amc: Annotated[str, typer.Argument(help="AMC number of the insurer to crypto-shred.")],
    yes: Annotated[bool, typer.Option("--yes", help="Confirm: this cannot be undone.")] = False,
) -> None:
    """Destroy the insurer's key-encryption key and blind indexes: its data becomes unreadable for good."""
    from rempart.registry import service

    if not yes:
        raise fail("crypto-shredding cannot be undone; add --yes to confirm", 2)
    with platform() as p, p.session() as session:
        try:
            count = service.shred_insurer(
                session, p.keystore, amc_number=amc, audit=p.audit.for_platform("cli", operator=_operator())
            )
        except service.RegistryError as exc:
            raise fail(str(exc)) from None
        session.commit()
    console.print(f"insurer {amc} shredded: {count} beneficiaries are now unreadable")


# -- imports -------------------------------------------------------------------------------


@import_app.command("beneficiaries")
def import_beneficiaries_cmd(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="CSV feed (docs/feeds.md).")],
    insurer: Annotated[str, typer.Option("--insurer", help="AMC number the feed belongs to.")],
    full: Annotated[bool, typer.Option("--full", help="The file is the insurer's whole population.")] = False,
    accept_partial: Annotated[
        bool, typer.Option("--accept-partial", help="Apply the good rows even if some are bad.")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Allow a --full feed to close more than the safety share.")
    ] = False,
    actor: Annotated[str, typer.Option(help="Who runs the import (recorded).")] = "",
    today: Annotated[str | None, typer.Option(help="Reference date (YYYY-MM-DD), default today.")] = None,
) -> None:
    """Import a beneficiaries feed: all or nothing (unless --accept-partial), idempotent."""
    from rempart.registry.importer import ImportOptions, ImportRefused, import_beneficiaries

    settings = get_settings()
    options = ImportOptions(
        mode="full" if full else "delta",
        accept_partial=accept_partial,
        force=force,
        actor=actor or os.environ.get("USER", "cli"),
        today=dt.date.fromisoformat(today) if today else dt.date.today(),
        chunk_rows=settings.import_chunk_rows,
        workers=settings.import_workers,
        max_closing_share=settings.full_import_max_closing_share,
    )
    size = file.stat().st_size
    with (
        platform() as p,
        p.session() as session,
        p.raw_connection() as conn,
        Progress(
            TextColumn("[bold]import"), BarColumn(), DownloadColumn(), TimeRemainingColumn(), console=console
        ) as progress,
    ):
        task = progress.add_task("import", total=size)
        try:
            result = import_beneficiaries(
                conn=conn,
                session=session,
                keystore=p.keystore,
                path=file,
                amc_number=insurer,
                options=options,
                report_dir=settings.data_dir / "reports",
                audit=p.audit.for_platform("import", operator=options.actor),
                on_progress=lambda done: progress.update(task, completed=done),
            )
        except ImportRefused as exc:
            raise fail(str(exc)) from None
        progress.update(task, completed=size)
    if result.fatal:
        console.print(f"[red]{file.name}:[/red] {result.fatal}")
    for problem in result.problems[:50]:
        console.print(f"{file.name}: {problem}")
    if result.problem_count > 50:
        console.print(f"… and {result.problem_count - 50} more problems")
    summary = {
        "import": str(result.import_id),
        "file": file.name,
        "sha256": result.file_sha256,
        "status": result.status,
        "rows": result.rows_total,
        "inserted": result.inserted,
        "updated": result.updated,
        "unchanged": result.unchanged,
        "rejected": result.rejected,
        "coverage_closed": result.coverage_closed,
        "report": str(result.report_path),
    }
    out.print_json(json.dumps(summary))
    if result.status == "rejected":
        raise typer.Exit(1)


@import_app.command("schedule")
def import_schedule(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="Guarantee schedule, JSON format 1.")],
    insurer: Annotated[str | None, typer.Option("--insurer", help="AMC number (or 'insurer' in the file).")] = None,
    valid_from: Annotated[str | None, typer.Option(help="First day of validity (or 'valid_from' in the file).")] = None,
    valid_to: Annotated[str | None, typer.Option(help="Last day of validity, if known.")] = None,
) -> None:
    """Load a guarantee schedule version for a contract (the schedule's `code`)."""
    from rempart.coverage.schedule import ScheduleError
    from rempart.registry import service

    try:
        data: Any = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise fail(f"{file.name}: not UTF-8 JSON ({exc})") from None
    if not isinstance(data, dict):
        raise fail(f"{file.name}: expected a JSON object")
    envelope = data if "schedule" in data else {"schedule": data}
    amc = insurer or envelope.get("insurer")
    start = valid_from or envelope.get("valid_from")
    end = valid_to or envelope.get("valid_to")
    if not amc or not start:
        raise fail(f"{file.name}: give --insurer and --valid-from (or 'insurer' and 'valid_from' in the file)")
    try:
        start_date = dt.date.fromisoformat(str(start))
        end_date = dt.date.fromisoformat(str(end)) if end else None
    except ValueError:
        raise fail(f"{file.name}: valid_from/valid_to must be YYYY-MM-DD") from None
    with platform() as p, p.session() as session:
        try:
            loaded = service.load_schedule(
                session,
                amc_number=str(amc),
                data=envelope["schedule"],
                valid_from=start_date,
                valid_to=end_date,
                responsable=bool(envelope.get("responsable", True)),
            )
        except ScheduleError as exc:
            for path, reason in exc.problems:
                console.print(f"{file.name}: schedule.{path}: {reason}")
            raise typer.Exit(1) from None
        except service.RegistryError as exc:
            raise fail(f"{file.name}: {exc}") from None
        session.commit()
    state = "loaded" if loaded.changed else "unchanged"
    console.print(f"schedule {loaded.contract_code} from {loaded.valid_from}: {state}")


# -- keys ------------------------------------------------------------------------------------


@keys_app.command("rotate")
def keys_rotate(
    insurer: Annotated[list[str] | None, typer.Option("--insurer", help="AMC number(s); default every owner.")] = None,
    include_platform: Annotated[bool, typer.Option("--platform/--no-platform", help="Also the platform key.")] = True,
) -> None:
    """New KEK version and data key: new writes use them; old rows still read until `keys rewrap`."""
    from sqlalchemy import select

    from rempart.crypto.keystore import PLATFORM_KEK, kek_name_for_insurer
    from rempart.registry.models import INSURER_ACTIVE, Insurer

    with platform() as p, p.session() as session:
        names = (
            [kek_name_for_insurer(a) for a in insurer]
            if insurer
            else [
                kek_name_for_insurer(i.amc_number)
                for i in session.scalars(select(Insurer).where(Insurer.status == INSURER_ACTIVE))
            ]
        )
        if include_platform and not insurer and p.keystore.provider.exists(PLATFORM_KEK):
            names.append(PLATFORM_KEK)
        for name in names:
            version = p.keystore.rotate(session, name)
            console.print(f"{name}: KEK version {version}, new data key active")
        session.commit()


@keys_app.command("rewrap")
def keys_rewrap(batch: Annotated[int, typer.Option(help="Rows per transaction.")] = 2000) -> None:
    """Re-encrypt rows still under retiring data keys (resumable, runs beside normal traffic)."""
    from rempart.registry import rekey

    with platform() as p, p.session() as session:
        total = rekey.rows_under(session, p.keystore.retiring_key_ids(session))
        with Progress(
            TextColumn("[bold]rewrap"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} rows"),
            console=console,
        ) as progress:
            task = progress.add_task("rewrap", total=total)
            moved = rekey.rewrap(
                session, p.keystore, batch_rows=batch, on_progress=lambda n: progress.advance(task, n),
                audit=p.audit.for_platform("cli", operator=_operator()),
            )  # fmt: skip
    console.print(f"{moved} rows re-encrypted under the active keys")


@keys_app.command("retire")
def keys_retire() -> None:
    """Retire data keys no row uses any more, and the KEK versions nothing needs."""
    from rempart.registry import rekey

    with platform() as p, p.session() as session:
        retired = rekey.retire_unused(session, p.keystore)
        left = p.keystore.retiring_key_ids(session)
    console.print(
        f"retired data keys: {retired or 'none'}" + (f"; still in use, run `keys rewrap`: {left}" if left else "")
    )


@keys_app.command("status")
def keys_status() -> None:
    """Data keys by owner, purpose, KEK version and state."""
    from rempart.registry import rekey

    with platform() as p, p.session() as session:
        table = Table("KEK", "purpose", "data key", "KEK version", "state")
        for row in rekey.key_status(session):
            table.add_row(*(str(v) for v in row))
        out.print(table)


# -- audit ----------------------------------------------------------------------------------------


@audit_app.command("verify")
def audit_verify(
    key: Annotated[str | None, typer.Option(help="Verifier key to trust (default: this platform's own).")] = None,
    checkpoint: Annotated[
        list[Path] | None, typer.Option(help="A signed checkpoint kept outside the database (repeatable).")
    ] = None,
) -> None:
    """Recompute the Merkle tree from every stored event and check it against every signed
    checkpoint; report the first event modified, deleted, inserted or moved. Exit status 1 on
    any discrepancy. Last line: a JSON summary."""
    from rempart.audit import service as audit
    from rempart.audit.verify import verify
    from rempart.db.server import libpq_url

    with platform() as p:
        p.audit.log.sync()
        with p.session() as session:
            trusted = key or audit.verifier_key(session, p.keystore, p.settings.audit_log_origin)
        import psycopg

        with psycopg.connect(libpq_url(p.url)) as conn:
            held = [path.read_text() for path in checkpoint or []]
            report = verify(conn, trusted, held=held, connect=lambda: psycopg.connect(libpq_url(p.url)))
    for finding in report.findings:
        console.print(f"[red]{finding.kind}[/red] {finding.message}")
    first = report.first
    summary = {"events": report.events, "checkpoints": report.checkpoints, "ok": report.ok,
               "first": None if first is None else {"kind": first.kind, "seq": first.seq, "message": first.message},
               "seconds": round(report.seconds, 3)}  # fmt: skip
    out.print(json.dumps(summary), soft_wrap=True)
    if not report.ok:
        raise typer.Exit(1)


@audit_app.command("checkpoint")
def audit_checkpoint() -> None:
    """Sign the tree as it stands (C2SP signed note) and print the checkpoint."""
    with platform() as p:
        out.print(p.checkpoint(), end="", soft_wrap=True, highlight=False)


@audit_app.command("key")
def audit_key() -> None:
    """The verifier key insurers configure to check checkpoints (`name+hash+key`)."""
    from rempart.audit import service as audit

    with platform() as p, p.session() as session:
        out.print(audit.verifier_key(session, p.keystore, p.settings.audit_log_origin), soft_wrap=True)


@prove_app.command("inclusion")
def prove_inclusion(
    seq: Annotated[int, typer.Option(help="The event's position in the log.")],
    size: Annotated[int | None, typer.Option(help="Tree size (default: the latest checkpoint's).")] = None,
) -> None:
    """Inclusion proof of one event (JSON: index, size, body, leaf_hash, proof)."""
    from rempart.audit import service as audit

    with platform() as p, p.session() as session:
        latest = audit.latest_checkpoint(session)
        size = size or (latest[0] if latest else 0)
        try:
            proof = audit.prove_inclusion(session, seq=seq, size=size)
        except LookupError as exc:
            raise fail(str(exc)) from None
    out.print(json.dumps(proof.as_json()), soft_wrap=True)


@prove_app.command("consistency")
def prove_consistency(
    size1: Annotated[int, typer.Option("--from", help="The older checkpoint's size.")],
    size2: Annotated[int, typer.Option("--to", help="The newer checkpoint's size.")],
) -> None:
    """Consistency proof between two tree sizes (JSON: size1, size2, proof)."""
    from rempart.audit import service as audit

    with platform() as p, p.session() as session:
        try:
            proof = audit.prove_consistency(session, size1=size1, size2=size2)
        except LookupError as exc:
            raise fail(str(exc)) from None
    out.print(json.dumps({"size1": size1, "size2": size2, "proof": [h.hex() for h in proof]}), soft_wrap=True)


@audit_app.command("address")
def audit_address(seq: Annotated[int, typer.Option(help="The event's position in the log.")]) -> None:
    """Security officers: open the network address an event sealed (the opening is audited)."""
    from rempart.audit import service as audit

    with platform() as p, p.session() as session:
        try:
            address = audit.open_address(
                session, p.keystore, seq=seq, audit=p.audit.for_platform("security", operator=_operator())
            )
        except LookupError as exc:
            raise fail(str(exc)) from None
    out.print(address or "(no address recorded)", soft_wrap=True)


@audit_app.command("who-accessed")
def audit_who_accessed(
    birth_date: Annotated[str, typer.Option(help="YYYY-MM-DD.")],
    nir: Annotated[str | None, typer.Option(help="The beneficiary's NIR.")] = None,
    amc: Annotated[str | None, typer.Option(help="Or the card: AMC number...")] = None,
    member: Annotated[str | None, typer.Option(help="...member number...")] = None,
    rank: Annotated[int | None, typer.Option(help="...and rank of birth.")] = None,
    html: Annotated[Path | None, typer.Option(help="Also write the page in French to this file.")] = None,
) -> None:
    """Answer a GDPR Article 15 request: every access to one person's data (JSON on stdout).
    The request itself is audited."""
    from rempart.audit import subject_access

    lookup = subject_access.SubjectLookup(nir=nir, birth_date=dt.date.fromisoformat(birth_date), amc_number=amc,
                                          member_number=member, birth_rank=rank)  # fmt: skip
    with platform() as p, p.session() as session:
        try:
            report = subject_access.build_report(
                session, session, p.keystore, lookup=lookup, audit=p.audit.for_platform("cli", operator=_operator())
            )
        except (subject_access.NotFound, ValueError) as exc:
            raise fail(str(exc)) from None
    if html is not None:
        html.write_text(report.as_html(), encoding="utf-8")
    out.print(json.dumps(report.as_json(), ensure_ascii=False), soft_wrap=True)


@audit_app.command("what-seen")
def audit_what_seen(
    since: Annotated[str, typer.Option(help="Window start, ISO 8601 (UTC if no offset).")],
    until: Annotated[str, typer.Option(help="Window end, ISO 8601.")],
    account: Annotated[list[str] | None, typer.Option(help="Account id (repeatable).")] = None,
    client: Annotated[list[str] | None, typer.Option(help="API client id (repeatable).")] = None,
    network: Annotated[list[str] | None, typer.Option(help="Address or /24 prefix (repeatable).")] = None,
    prove: Annotated[bool, typer.Option(help="Also prove the answer complete against a fresh checkpoint.")] = False,
) -> None:
    """Breach scoping: every subject these accounts, clients or networks were shown in the
    window, with the fields (one JSON line each, then a summary)."""
    import uuid as uuid_

    from rempart.audit import queries
    from rempart.audit import service as audit

    def instant(text: str) -> dt.datetime:
        value = dt.datetime.fromisoformat(text)
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)

    with platform() as p, p.session() as session:
        window = queries.Window(
            instant(since), instant(until), tuple(uuid_.UUID(a) for a in account or ()),
            tuple(uuid_.UUID(c) for c in client or ()), queries.network_hashes(session, p.keystore, network or []),
        )  # fmt: skip
        seen = queries.subjects_seen(session, window)
        for subject in seen:
            out.print(json.dumps({"subject_kind": subject.subject_kind, "subject": subject.subject_id,
                                  "fields": sorted(subject.fields), "accesses": subject.accesses,
                                  "first": str(subject.first), "last": str(subject.last)}), soft_wrap=True)  # fmt: skip
        summary: dict[str, Any] = {"subjects": len(seen)}
        if prove:
            note = p.checkpoint()
            key = audit.verifier_key(session, p.keystore, p.settings.audit_log_origin)
            result = queries.prove_window(session, window, checkpoint_note=note, verifier_key=key)
            summary |= {"complete": result.complete, "checkpoint": result.checkpoint_size,
                        "events_read": result.events_read, "message": result.message}  # fmt: skip
    out.print(json.dumps(summary), soft_wrap=True)


@app.command("outbox")
def outbox_deliver() -> None:
    """Send the e-mails waiting in the outbox through REMPART_SMTP_HOST (notices such as an IBAN
    change announced to the previous contact)."""
    from rempart.registry import outbox

    with platform() as p, p.session() as session:
        try:
            mailer = outbox.SmtpMailer(p.settings)
        except ValueError as exc:
            raise fail(str(exc)) from None
        sent = outbox.deliver(
            session, p.keystore, sender=p.settings.smtp_sender, mailer=mailer,
            audit=p.audit.for_platform("outbox", operator=_operator()), on_error=lambda m: console.print(m),
        )  # fmt: skip
    out.print(json.dumps({"sent": sent}))


# -- population and serving ---------------------------------------------------------------------


@app.command("invite")
def invite(
    role: Annotated[
        str, typer.Argument(help="professional, establishment_admin, insurer_staff, platform_operator, ...")
    ],
    rpps: Annotated[str | None, typer.Option(help="For a professional: their RPPS or ADELI.")] = None,
    finess: Annotated[str | None, typer.Option(help="The establishment (FINESS) the account acts for.")] = None,
    insurer: Annotated[str | None, typer.Option(help="For insurer staff: the insurer's AMC number.")] = None,
) -> None:
    """Issue a single-use invitation link that enrols a passkey for a new account (operator console)."""
    from sqlalchemy import select

    from rempart.identity import service as identity
    from rempart.registry import service as registry
    from rempart.registry.models import Establishment

    with platform() as p, p.session() as session:
        spec: dict[str, Any] = {"role": role}
        try:
            if rpps:
                found = registry.find_professional(session, p.keystore, identifier=rpps)
                if found is None:
                    raise fail("no professional with that identifier")
                spec["professional_id"] = found.id
            if finess:
                establishment = session.scalars(select(Establishment).where(Establishment.finess == finess)).first()
                if establishment is None:
                    raise fail("no establishment with that FINESS")
                spec["establishment_id"] = establishment.id
            if insurer:
                spec["insurer_id"] = registry.get_insurer(session, insurer).id
            token = identity.issue_invitation(session, p.settings, **spec)
        except (identity.InvitationError, registry.RegistryError) as exc:
            raise fail(str(exc)) from None
        session.commit()
        out.print(identity.invitation_link(p.settings, token), soft_wrap=True)


@app.command("seed")
def seed_cmd(
    seed: Annotated[int, typer.Option("--seed", help="Random seed: the same seed gives the same population.")] = 2024,
    families: Annotated[int, typer.Option(help="Families across all insurers.")] = 2000,
    professionals: Annotated[int, typer.Option(help="Health professionals.")] = 300,
) -> None:
    """Load a deterministic synthetic population (insurers, contracts, families, professionals)."""
    from rempart.registry.seed import seed as run_seed

    with (
        platform() as p,
        Progress(TextColumn("[bold]seed {task.description}"), BarColumn(), console=console) as progress,
    ):
        task = progress.add_task("insurers", total=None)
        summary = run_seed(
            p,
            seed_value=seed,
            families=families,
            professionals=professionals,
            on_progress=lambda amc, n, c: progress.update(task, description=f"{amc}: {n} beneficiaries"),
        )
    if summary.already_seeded:
        console.print("the registry already holds data: nothing seeded")
        return
    console.print(
        f"seeded {summary.insurers} insurers, {summary.beneficiaries} beneficiaries "
        f"({summary.canaries} canaries), {summary.professionals} professionals"
    )


@app.command("serve")
def serve(
    demo: Annotated[
        bool, typer.Option("--demo", help="Seed a synthetic population first if the registry is empty.")
    ] = False,
    host: Annotated[str | None, typer.Option(help="Listen address.")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port.")] = None,
    families: Annotated[int, typer.Option(help="With --demo: families to seed.")] = 2000,
    professionals: Annotated[int, typer.Option(help="With --demo: professionals to seed.")] = 300,
    workers: Annotated[int | None, typer.Option(help="Server processes (default REMPART_HTTP_WORKERS, 1).")] = None,
) -> None:
    """Serve the platform over HTTP (starting the embedded PostgreSQL if no URL is configured)."""
    import uvicorn

    from rempart.api.app import create_app
    from rempart.api.serving import WorkersFailing, port_is_free, serve_processes
    from rempart.platform import SequencerProcess, sequencer_socket

    settings = get_settings()
    bind_host, bind_port = host or settings.http_host, port or settings.http_port
    processes = workers or settings.http_workers
    if processes > 1 and not port_is_free(bind_host, bind_port):
        # Before the database, the seed or the audit sequencer: a second server must not touch
        # the first one's audit socket.
        console.print(f"{bind_host}:{bind_port} is already in use")
        raise typer.Exit(1)
    p = open_platform(settings)
    try:
        if demo:
            from rempart.registry.seed import seed as run_seed

            summary = run_seed(p, seed_value=2024, families=families, professionals=professionals)
            if summary.already_seeded:
                console.print(f"reusing the registry already in {settings.data_dir}")
            else:
                console.print(f"seeded {summary.beneficiaries} beneficiaries across {summary.insurers} insurers")
        out.print(f"Rempart is serving on http://localhost:{bind_port}  (health: /healthz; Ctrl-C stops)")
        if demo:
            from rempart.identity.service import demo_invitations

            with p.session() as session:
                links = demo_invitations(session, settings)
                session.commit()
            out.print(f"Single-use invitations (valid {settings.invitation_hours} h), each enrols a passkey:")
            for who, link in links:
                out.print(f"  {who}: {link}", soft_wrap=True)
        if processes > 1:  # each worker opens its own platform (its own pool); one sequencer commits their reads
            os.environ["REMPART_HTTP_PORT"] = str(bind_port)  # workers derive the portal's origin from it
            os.environ.setdefault("REMPART_DATABASE_URL", p.url)
            p.close()
            sequencer = SequencerProcess(sequencer_socket(settings))
            if not sequencer.start():
                console.print("the audit sequencer did not start")
                raise typer.Exit(1)
            os.environ["REMPART_AUDIT_SEQUENCER"] = str(sequencer.path)
            try:
                serve_processes(bind_host, bind_port, processes)
            except WorkersFailing as failing:
                console.print(str(failing))
                raise typer.Exit(1) from None
            finally:
                sequencer.stop()
        else:
            uvicorn.run(create_app(p), host=bind_host, port=bind_port, log_level="warning")
    finally:
        p.close()
        console.print("stopped")


@coverage_app.command("check")
def coverage_check(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="Coverage vectors, format 1.")],
) -> None:
    """Run every case of a vectors file: one line per case, then a JSON summary. Exit status 1
    unless every case passes."""
    from rempart.coverage.vectors import CaseError, run_file

    try:
        results = run_file(json.loads(file.read_text()))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        console.print(f"{file.name}: not JSON ({exc})")
        raise typer.Exit(2) from None
    except CaseError as exc:
        console.print(f"{file.name}: {exc}")
        raise typer.Exit(2) from None
    for result in results:
        verdict = "pass" if result.passed else "FAIL"
        out.print(f"{verdict} {result.id}" + "".join(f"\n    {problem}" for problem in result.problems),
                  soft_wrap=True, markup=False, highlight=False)  # fmt: skip
    passed = sum(result.passed for result in results)
    out.print(json.dumps({"cases": len(results), "passed": passed}), soft_wrap=True)
    if passed != len(results):
        raise typer.Exit(1)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
