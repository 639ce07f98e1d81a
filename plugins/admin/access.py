"""Who may call the admin API, and which keys an admin may hand out or manage.

Each route needs one *admin action*, granted by ``auth.roles`` like any other action; the
built-in ``admin`` role grants them all through ``*``. A role tailored with some of them (say
``[admin:usage]`` for a finance team) reaches only those routes.

Key management never raises power: an admin creates, revokes and rotates only keys whose role
grants nothing its own role does not (every role, for a role holding ``*``), so an admin
limited to ``admin:keys`` cannot mint itself a key of the built-in ``admin`` role, nor rotate
one and learn its new secret. An admin of an organisation may create further admin keys of
that organisation: organisations administer themselves.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from aiohttp import web

from plugins.auth import AUTH
from plugins.auth.authenticate import AuthFailure
from plugins.auth.permissions import (
    ADMIN_ACTIONS,
    ALL,
)
from proxy.app import SETTINGS
from proxy.context import Identity
from proxy.errors import SidecarError
from proxy.events import emit

_WWW_AUTHENTICATE = 'Bearer realm="mistral-sidecar"'


@dataclass(frozen=True, slots=True)
class Roles:
    """The role table as the admin API reads it: each role's grants."""

    grants: Mapping[str, frozenset[str]]
    #: Roles that may send requests outside the API spec (``auth.unmapped_roles``).
    unmapped: frozenset[str]

    @classmethod
    def from_settings(cls, roles: Mapping[str, Sequence[str]],
                      unmapped: Sequence[str]) -> Roles:
        """From ``auth.roles`` and ``auth.unmapped_roles``."""
        return cls({name: frozenset(actions) for name, actions in roles.items()},
                   frozenset(unmapped))

    def allows(self, role: str, action: str) -> bool:
        """Whether ``role`` grants ``action`` (an unknown role grants nothing)."""
        grants = self.grants.get(role)
        return grants is not None and (ALL in grants or action in grants)

    def admin_actions(self, role: str) -> list[str]:
        """The admin actions ``role`` grants."""
        return [action for action in ADMIN_ACTIONS if self.allows(role, action)]

    def may_manage(self, actor_role: str, role: str) -> bool:
        """Whether a caller of ``actor_role`` may create, revoke or rotate a key of
        ``role``: it grants nothing ``actor_role`` does not."""
        mine = self.grants.get(actor_role, frozenset())
        theirs = self.grants.get(role)
        if theirs is None:
            return False
        if role in self.unmapped and actor_role not in self.unmapped:
            return False
        return ALL in mine or (ALL not in theirs and theirs <= mine)


def roles_of(app: web.Application) -> Roles:
    """The role table of the running sidecar."""
    settings = app[SETTINGS]
    return Roles.from_settings(settings["auth.roles"], settings["auth.unmapped_roles"])


def _denied(app: web.Application, status: int, reason: str, message: str) -> SidecarError:
    # Counted and logged like the proxy's refusals: brute force shows up in one place.
    emit(app, "auth.denied", None, status=status, reason=reason)
    headers = {"WWW-Authenticate": _WWW_AUTHENTICATE} if status == 401 else {}
    if status == 503:
        headers["Retry-After"] = "1"
    code = "store_unavailable" if status == 503 else None
    return SidecarError(status, message, code=code, headers=headers)


async def authenticate(request: web.Request, action: str | None) -> Identity:
    """The caller behind the request's sidecar key, if its role grants ``action`` (any admin
    action when ``None``); else 401 (no or bad key), 403 (role) or 503 (key store down)."""
    app = request.app
    state = app[AUTH]
    if state.mode != "keys":
        raise SidecarError(404, "The admin API is served only with sidecar keys "
                           "(SIDECAR_AUTH_MODE=keys).", code="no_route")
    try:
        identity = await state.authenticator.identify(request.headers.get("Authorization"))
    except AuthFailure as failure:
        raise _denied(app, failure.status, failure.reason, failure.message) from None
    roles = roles_of(app)
    allowed = roles.allows(identity.role, action) if action is not None \
        else bool(roles.admin_actions(identity.role))
    if not allowed:
        needed = action or " or ".join(ADMIN_ACTIONS)
        raise _denied(app, 403, "forbidden",
                      f"Your role ({identity.role}) does not allow this operation ({needed}).")
    return identity
