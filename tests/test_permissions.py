"""Roles and permissions, declared on service functions and checked there.

ASVS 5.0 V8 (authorization): V8.1 documented rules, V8.2 least privilege per role,
V8.3 enforcement in the service layer; V6 step-up for sensitive actions."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from rempart.identity import service
from rempart.identity.models import ROLES
from rempart.identity.permissions import ROLE_PERMISSIONS, Forbidden, Permission, StepUpRequired
from rempart.platform import Platform
from rempart.registry.identifiers import make_finess, make_rpps

SHOP = uuid.uuid4()
# A step-up counts for five minutes, so an actor's step-up is given by its age and dated when the
# actor is built, not at import: the whole suite runs longer than the window.
FRESH = dt.timedelta(0)
STALE = dt.timedelta(minutes=6)


def step_up_time(age: dt.timedelta | None) -> dt.datetime | None:
    return None if age is None else dt.datetime.now(dt.UTC) - age


def actor(
    role: str, *, step_up: dt.timedelta | None = FRESH, establishment: uuid.UUID | None = None
) -> service.CurrentUser:
    now = dt.datetime.now(dt.UTC)
    return service.CurrentUser(uuid.uuid4(), role, None, establishment, None, now, step_up_time(step_up), b"")


def test_every_role_has_declared_permissions_and_least_privilege() -> None:
    assert set(ROLE_PERMISSIONS) == set(ROLES)
    assert ROLE_PERMISSIONS["professional"] == {Permission.OWN_ACCOUNT, Permission.CHANGE_OWN_IBAN}
    assert Permission.BREAK_GLASS not in ROLE_PERMISSIONS["professional"] | ROLE_PERMISSIONS["establishment_admin"]
    assert Permission.INVITE_ANYONE in ROLE_PERMISSIONS["platform_operator"]


def test_service_functions_declare_what_they_need() -> None:
    assert service.begin_add_passkey.required_permissions == {Permission.OWN_ACCOUNT}  # type: ignore[attr-defined]
    assert service.begin_add_passkey.requires_step_up  # type: ignore[attr-defined]
    assert service.revoke_passkey.requires_step_up  # type: ignore[attr-defined]  (a stolen session cannot lock the owner out)


@pytest.mark.integration
def test_invitations_follow_the_issuer_role_and_need_step_up(platform: Platform) -> None:
    from rempart.identity.models import Account
    from rempart.registry import service as registry

    def stored(role: str, *, step_up: dt.timedelta | None = FRESH, establishment: uuid.UUID | None = None):  # type: ignore[no-untyped-def]
        account = Account(role=role, establishment_id=establishment)
        session.add(account)
        session.flush()
        now = dt.datetime.now(dt.UTC)
        return service.CurrentUser(account.id, role, None, establishment, None, now, step_up_time(step_up), b"")

    with platform.session() as session:
        shop = registry.register_establishment(session, name="Pharmacie du Port", kind="pharmacy", finess="750712184")
        admin = stored("establishment_admin", establishment=shop.id)
        assert service.issue_invitation_as(session, platform.settings, actor=admin, role="establishment_admin",
                                           establishment_id=shop.id)  # fmt: skip
        with pytest.raises(Forbidden):  # another establishment
            service.issue_invitation_as(session, platform.settings, actor=admin, role="establishment_admin",
                                        establishment_id=uuid.uuid4())  # fmt: skip
        here = registry.register_professional(session, platform.keystore, identifier=make_rpps("1000111222"),
                                              family_name="Roux", first_name="Léa", profession="pharmacist",
                                              specialty=None, establishment_ids=[shop.id])  # fmt: skip
        elsewhere_shop = registry.register_establishment(session, name="Autre", kind="pharmacy",
                                                         finess=make_finess("13000001"))  # fmt: skip
        there = registry.register_professional(session, platform.keystore, identifier=make_rpps("1000333444"),
                                               family_name="Blanc", first_name="Léo", profession="pharmacist",
                                               specialty=None, establishment_ids=[elsewhere_shop.id])  # fmt: skip
        assert service.issue_invitation_as(session, platform.settings, actor=admin, role="professional",
                                           professional_id=here.id, establishment_id=shop.id)  # fmt: skip
        with pytest.raises(Forbidden, match="does not practise"):  # hijacking a professional from elsewhere
            service.issue_invitation_as(session, platform.settings, actor=admin, role="professional",
                                        professional_id=there.id, establishment_id=shop.id)  # fmt: skip
        with pytest.raises(Forbidden):  # a role beyond their reach
            service.issue_invitation_as(session, platform.settings, actor=admin, role="platform_operator")
        with pytest.raises(StepUpRequired):
            service.issue_invitation_as(session, platform.settings,
                                        actor=stored("establishment_admin", step_up=STALE, establishment=shop.id),
                                        role="establishment_admin", establishment_id=shop.id)  # fmt: skip
        with pytest.raises(Forbidden):
            service.issue_invitation_as(session, platform.settings, actor=actor("professional"), role="professional")
        operator = stored("platform_operator")
        assert service.issue_invitation_as(session, platform.settings, actor=operator, role="security_officer")
        with pytest.raises(StepUpRequired):
            service.issue_invitation_as(session, platform.settings, actor=stored("platform_operator", step_up=None),
                                        role="security_officer")  # fmt: skip
        session.rollback()
