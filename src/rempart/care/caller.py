"""Who asks for care services: a professional at an establishment, through the portal (an
account with a passkey) or through practice software (an API client acting for them)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from rempart.audit import events as ev
from rempart.audit.service import RequestContext
from rempart.identity.apiclients import ApiCaller
from rempart.identity.permissions import Forbidden
from rempart.identity.service import CurrentUser

API_ROLE = "practice-software"


@dataclass(frozen=True)
class CareCaller:
    establishment_id: uuid.UUID
    professional_id: uuid.UUID
    api_client_id: uuid.UUID | None = None
    account_id: uuid.UUID | None = None
    passkey_id: uuid.UUID | None = None

    @staticmethod
    def of_api(caller: ApiCaller, scope: str) -> CareCaller:
        """Practice software: the token must carry `scope` (eligibility, agreements, invoices)."""
        if scope not in caller.scopes:
            raise Forbidden(f"this client's token does not carry the '{scope}' scope")
        return CareCaller(caller.establishment_id, caller.professional_id, api_client_id=caller.client_id)

    @staticmethod
    def of_user(user: CurrentUser) -> CareCaller:
        """A professional logged in to the portal, at the establishment chosen for the session."""
        if user.role != "professional" or user.professional_id is None:
            raise Forbidden("care services are for professionals")
        if user.establishment_id is None or user.must_choose_establishment:
            raise Forbidden("choose the establishment you are working at first")
        return CareCaller(user.establishment_id, user.professional_id, account_id=user.account_id,
                          passkey_id=user.passkey_id)  # fmt: skip

    def audit_context(self, *, ip: str | None, request_id: str | None) -> RequestContext:
        actor = ev.Actor(
            account_id=self.account_id, role="professional" if self.account_id else API_ROLE,
            establishment_id=self.establishment_id, api_client_id=self.api_client_id,
            acting_professional_id=self.professional_id, passkey_id=self.passkey_id,
        )  # fmt: skip
        return RequestContext(actor, ip=ip, request_id=request_id)
