"""The two questions the audit log answers, through the portal, the API and the command line:
"who accessed my data?" (GDPR Article 15) and "what did these accounts see?" (breach scoping,
with a completeness proof against a signed checkpoint).

ASVS 5.0 V16 (security logging): V16.2 who/what/when/where of each access; V16.4 integrity
checked independently (proofs with the standalone verifier). V8: each question is behind its
permission; insurer staff find only their own insurer's beneficiaries."""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid
from pathlib import Path

import httpx
import psycopg
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from rempart.audit import events as ev
from rempart.audit import queries, verifier
from rempart.audit import service as audit
from rempart.db.base import utcnow
from rempart.db.server import libpq_url
from rempart.identity import breakglass, service
from rempart.identity.models import Account
from rempart.platform import Platform, open_platform
from rempart.registry import service as registry
from rempart.registry.models import Beneficiary, Insurer
from rempart.settings import get_settings

from feedkit import AMC_A, AMC_B, families, write_feed
from portal_server import passkey_session
from registry_helpers import run_import, two_insurers

pytestmark = pytest.mark.integration
REASON = "Réclamation écrite de l'adhérent sur un remboursement d'optique refusé"


def break_glass_read(platform: Platform, beneficiary_id: uuid.UUID) -> uuid.UUID:
    """An operator opens a grant and reads; another operator tries without one."""
    with platform.session() as session:
        operators = [Account(role="platform_operator") for _ in range(2)]
        session.add_all(operators)
        session.flush()
        ids = [o.id for o in operators]
        actors = [service.CurrentUser(o.id, o.role, None, None, None, utcnow(), utcnow(), b"") for o in operators]
        trails = [platform.audit.for_request(a.audit_context(ip="198.51.100.20", request_id=None)) for a in actors]
        with pytest.raises(breakglass.Forbidden):
            breakglass.read_beneficiary(session, platform.keystore, actor=actors[1], beneficiary_id=beneficiary_id,
                                        data_session=session, audit=trails[1])  # fmt: skip
        breakglass.open_break_glass(session, actor=actors[0], beneficiary_id=beneficiary_id, reason=REASON,
                                    audit=trails[0])  # fmt: skip
        session.commit()
        breakglass.read_beneficiary(session, platform.keystore, actor=actors[0], beneficiary_id=beneficiary_id,
                                    data_session=session, audit=trails[0])  # fmt: skip
        session.commit()
    platform.audit.log.sync()
    return ids[0]


def disclose(platform: Platform, ctx: audit.RequestContext) -> None:
    platform.audit.for_request(ctx).disclosed(
        "rights.check", purpose="tiers-payant", subjects=[(ev.BENEFICIARY, uuid.uuid4())], fields=("coverage",)
    )


def test_v16_article_15_lists_exactly_the_accesses_made(
    portal_client: tuple[Platform, httpx.Client], tmp_path: Path
) -> None:
    platform, client = portal_client
    two_insurers(platform)
    run_import(platform, write_feed(tmp_path / "a.csv", families(2)), amc=AMC_A)
    run_import(platform, write_feed(tmp_path / "b.csv", families(1, first=9)), amc=AMC_B)
    with platform.session() as session:
        a = registry.get_insurer(session, AMC_A)
        target = session.scalars(select(Beneficiary).where(Beneficiary.insurer_id == a.id)).first()
        assert target is not None
        view = registry.read_beneficiary(session, platform.keystore, beneficiary=target, amc_number=AMC_A)
        b_id = session.scalars(select(Insurer.id).where(Insurer.amc_number == AMC_B)).one()
    assert view.nir is not None
    break_glass_read(platform, view.id)

    dpo, dpo_account = passkey_session(platform, "dpo")
    form = {"nir": view.nir, "birth_date": view.birth_date.isoformat(), "format": "json"}
    reply = client.post("/audit/subject", data=form, headers=dpo)
    assert reply.status_code == 200, reply.text
    report = reply.json()
    assert report["records"] == 1
    lines = [(line["who"], line["action"], line["decision"]) for line in report["accesses"]]
    assert sorted(lines) == sorted([
        ("Opérateur de la plateforme Rempart", "beneficiary.read", "refusé"),
        ("Opérateur de la plateforme Rempart", "break-glass.open", "autorisé"),
        ("Opérateur de la plateforme Rempart", "beneficiary.read", "autorisé"),
    ])  # fmt: skip
    assert view.nir not in reply.text and view.family_name not in reply.text

    page = client.post("/audit/subject", data=form | {"format": "html"}, headers=dpo)
    assert page.status_code == 200 and "Qui a accédé à vos données" in page.text
    assert "Accès exceptionnel motivé" in page.text and "refusé" in page.text

    # By the card as well, and the report itself is now one more access, by the DPO.
    card = {"amc_number": AMC_A, "member_number": view.member_number, "birth_rank": str(view.birth_rank),
            "birth_date": view.birth_date.isoformat(), "format": "json"}  # fmt: skip
    again = client.post("/audit/subject", data=card, headers=dpo).json()
    assert ("Délégué à la protection des données", "subject.access-report", "autorisé") in [
        (line["who"], line["action"], line["decision"]) for line in again["accesses"]
    ]

    # Insurer B's staff cannot learn anything of insurer A's beneficiary: the same answer as nobody.
    staff_b, _ = passkey_session(platform, "insurer_staff", insurer_id=b_id)
    foreign = client.post("/audit/subject", data=form, headers=staff_b)
    nobody = client.post(
        "/audit/subject", data=form | {"nir": ("2" if view.nir[0] == "1" else "1") + view.nir[1:]}, headers=dpo
    )
    assert foreign.status_code == nobody.status_code == 404 and foreign.json() == nobody.json()
    officer, _ = passkey_session(platform, "security_officer")  # breach scoping, not Article 15
    assert client.post("/audit/subject", data=form, headers=officer).status_code == 403
    # Identifiers never appear in a URL: the page posts them.
    assert client.get("/audit/subject", params={"nir": view.nir}, headers=dpo).status_code == 200
    with platform.session() as session:
        reports = [a for a in queries.accesses_to(session, [view.id]) if a.action == "subject.access-report"]
    assert {a.account_id for a in reports} == {str(dpo_account)}


def test_v16_what_these_accounts_saw_with_a_completeness_proof(platform: Platform) -> None:
    mallory, alice = uuid.uuid4(), uuid.uuid4()
    seen_by_mallory = [uuid.uuid4() for _ in range(5)]

    def read(account: uuid.UUID, subject: uuid.UUID, ip: str, fields: tuple[str, ...]) -> None:
        ctx = audit.RequestContext(ev.Actor(account_id=account, role="professional"), ip=ip)
        platform.audit.for_request(ctx).disclosed("rights.check", purpose="tiers-payant",
                                                  subjects=[(ev.BENEFICIARY, subject)], fields=fields)  # fmt: skip

    for subject in seen_by_mallory:
        read(mallory, subject, "203.0.113.9", ("coverage", "birth_date"))
    read(mallory, seen_by_mallory[0], "203.0.113.10", ("coverage",))
    read(alice, uuid.uuid4(), "192.0.2.1", ("coverage",))
    denied = audit.RequestContext(ev.Actor(account_id=mallory, role="professional"), ip="203.0.113.9")
    platform.audit.for_request(denied).refused(
        "rights.check", purpose="tiers-payant", reason="quota", decision=ev.CONTAINED,
        subject=(ev.BENEFICIARY, uuid.uuid4()),
    )  # fmt: skip
    since, until = utcnow() - dt.timedelta(hours=1), utcnow() + dt.timedelta(hours=1)

    with platform.session() as session:
        by_account = queries.subjects_seen(session, queries.Window(since, until, accounts=(mallory,)))
        networks = queries.network_hashes(session, platform.keystore, ["203.0.113.0/24"])
        by_network = queries.subjects_seen(session, queries.Window(since, until, networks=networks))
    assert {uuid.UUID(s.subject_id) for s in by_account} == set(seen_by_mallory)  # not the contained attempt
    first = next(s for s in by_account if s.subject_id == str(seen_by_mallory[0]))
    assert first.fields == {"coverage", "birth_date"} and first.accesses == 2
    assert [s.subject_id for s in by_network] == [s.subject_id for s in by_account]

    note = platform.checkpoint()
    with platform.session() as session:
        key = audit.verifier_key(session, platform.keystore, platform.settings.audit_log_origin)
        window = queries.Window(since, until, accounts=(mallory,))
        proof = queries.prove_window(session, window, checkpoint_note=note, verifier_key=key)
    assert proof.complete and proof.events_read == 8, proof

    # Someone moves one of mallory's events out of the window by its time column: the index
    # misses it, the events' own bytes do not, and the answer is flagged incomplete.
    with psycopg.connect(libpq_url(platform.url), autocommit=True) as raw, raw.transaction():
        raw.execute("ALTER TABLE audit.events DISABLE TRIGGER USER")
        raw.execute("UPDATE audit.events SET at = at - interval '400 days' WHERE seq = 3")
        raw.execute("ALTER TABLE audit.events ENABLE TRIGGER USER")
    with platform.session() as session:
        moved = queries.prove_window(session, window, checkpoint_note=note, verifier_key=key)
    assert not moved.complete and "differs" in moved.message
    with psycopg.connect(libpq_url(platform.url), autocommit=True) as raw, raw.transaction():
        raw.execute("ALTER TABLE audit.events DISABLE TRIGGER USER")
        raw.execute("UPDATE audit.events SET at = at + interval '400 days' WHERE seq = 3")
        raw.execute("ALTER TABLE audit.events ENABLE TRIGGER USER")

    # Someone erases one of mallory's events (the owner, trigger disabled): the answer is no
    # longer provably complete.
    with psycopg.connect(libpq_url(platform.url), autocommit=True) as raw, raw.transaction():
        raw.execute("ALTER TABLE audit.events DISABLE TRIGGER USER")
        raw.execute("DELETE FROM audit.events WHERE seq = 2")
        raw.execute("ALTER TABLE audit.events ENABLE TRIGGER USER")
    with platform.session() as session:
        broken = queries.prove_window(session, window, checkpoint_note=note, verifier_key=key)
    assert not broken.complete


def test_v16_auditors_fetch_checkpoints_and_proofs_over_http(portal_client: tuple[Platform, httpx.Client]) -> None:
    platform, client = portal_client
    ctx = audit.RequestContext(ev.Actor(account_id=uuid.uuid4(), role="professional"))
    for _ in range(40):
        disclose(platform, ctx)
    old_note = platform.checkpoint()
    for _ in range(30):
        disclose(platform, ctx)
    platform.checkpoint()
    operator, _ = passkey_session(platform, "platform_operator")
    key = client.get("/api/v1/audit/key", headers=operator).text
    note = client.get("/api/v1/audit/checkpoint", headers=operator).text
    checkpoint = verifier.open_checkpoint(note, key)
    old = verifier.open_checkpoint(old_note, key)
    kept = client.get("/api/v1/audit/checkpoints", params={"since": 1}, headers=operator).json()
    assert [entry["size"] for entry in kept] == [40, 70] and kept[0]["note"] == old_note
    assert (old.size, checkpoint.size) == (40, 70)
    proof = client.get("/api/v1/audit/proofs/inclusion", params={"seq": 33, "size": 70}, headers=operator).json()
    leaf = verifier.event_leaf_hash(33, proof["logged_at_us"], base64.b64decode(proof["body"]))
    assert leaf.hex() == proof["leaf_hash"]
    assert verifier.verify_inclusion(leaf, 33, 70, [bytes.fromhex(h) for h in proof["proof"]], checkpoint.root)
    consistency = client.get("/api/v1/audit/proofs/consistency", params={"from": 40, "to": 70}, headers=operator)
    hashes = [bytes.fromhex(h) for h in consistency.json()["proof"]]
    assert verifier.verify_consistency(40, 70, old.root, checkpoint.root, hashes)
    assert (
        client.get("/api/v1/audit/proofs/inclusion", params={"seq": 90, "size": 70}, headers=operator).status_code
        == 404
    )
    admin, _ = passkey_session(platform, "establishment_admin")
    assert client.get("/api/v1/audit/checkpoint", headers=admin).status_code == 403
    assert client.get("/api/v1/audit/checkpoint").status_code == 401


def test_cli_verify_prove_and_the_standalone_verifier(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rempart.cli.main import app

    monkeypatch.setenv("REMPART_DATABASE_URL", database_url)
    monkeypatch.setenv("REMPART_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    try:
        platform = open_platform(get_settings())
        ctx = audit.RequestContext(ev.Actor(account_id=uuid.uuid4(), role="professional"))
        for _ in range(12):
            disclose(platform, ctx)
        platform.close()
        cli = CliRunner()
        note = cli.invoke(app, ["audit", "checkpoint"])
        assert note.exit_code == 0 and "\n12\n" in note.stdout
        key = cli.invoke(app, ["audit", "key"]).stdout.strip()
        ok = cli.invoke(app, ["audit", "verify"])
        assert ok.exit_code == 0, ok.output
        assert json.loads(ok.stdout.strip().splitlines()[-1])["ok"] is True
        proof = cli.invoke(app, ["audit", "prove", "inclusion", "--seq", "5"])
        assert proof.exit_code == 0, proof.output
        (tmp_path / "note").write_text(note.stdout)
        (tmp_path / "proof.json").write_text(proof.stdout)
        document = json.loads(proof.stdout)
        body = base64.b64decode(document["body"])
        assert document["leaf_hash"] == verifier.event_leaf_hash(5, document["logged_at_us"], body).hex()
        # A forged event with the genuine leaf hash is refused: the verifier recomputes the leaf.
        forged = dict(document, body=base64.b64encode(body.replace(b"tiers-payant", b"tiers-payanT")).decode())
        (tmp_path / "forged.json").write_text(json.dumps(forged))
        assert verifier.main(["inclusion", str(tmp_path / "note"), key, str(tmp_path / "forged.json")]) == 1
        assert verifier.main(["inclusion", str(tmp_path / "note"), key, str(tmp_path / "proof.json")]) == 0

        with psycopg.connect(libpq_url(database_url), autocommit=True) as raw, raw.transaction():
            raw.execute("ALTER TABLE audit.events DISABLE TRIGGER USER")
            raw.execute("UPDATE audit.events SET body = convert_to(replace(convert_from(body, 'UTF8'),"
                        " 'tiers-payant', 'tiers-payanT'), 'UTF8') WHERE seq = 4")  # fmt: skip
            raw.execute("ALTER TABLE audit.events ENABLE TRIGGER USER")
        bad = cli.invoke(app, ["audit", "verify"])
        assert bad.exit_code == 1
        summary = json.loads(bad.stdout.strip().splitlines()[-1])
        assert summary["ok"] is False and summary["first"]["seq"] == 4 and summary["first"]["kind"] == "modified"
    finally:
        get_settings.cache_clear()
