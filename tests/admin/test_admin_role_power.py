"""Which keys an admin may hand out: none that grants more than its own role, so that no
admin can raise its own power by creating (or rotating and so learning) a stronger key."""

from __future__ import annotations

from plugins.admin.access import Roles
from plugins.auth.permissions import ADMIN_KEYS, ADMIN_USAGE, DEFAULT_ROLES

TABLE = {
    **DEFAULT_ROLES,
    "key_admin": [ADMIN_KEYS, "list_models", "use_model"],
    "finance": [ADMIN_USAGE],
    "chatter": ["use_model"],
    "wide": ["use_model", "list_models", "read_model"],
    "robot": ["use_model"],
}


def test_the_built_in_admin_may_hand_out_every_role() -> None:
    roles = Roles.from_settings(TABLE, ["admin", "robot"])
    assert all(roles.may_manage("admin", role) for role in TABLE)
    assert roles.admin_actions("admin") == ["admin:keys", "admin:usage", "admin:records",
                                            "admin:state"]
    assert roles.admin_actions("user") == []


def test_a_tailored_admin_hands_out_only_weaker_roles() -> None:
    roles = Roles.from_settings(TABLE, ["admin", "robot"])
    assert roles.may_manage("key_admin", "chatter")
    assert roles.may_manage("key_admin", "key_admin")
    assert not roles.may_manage("key_admin", "admin")
    assert not roles.may_manage("key_admin", "wide")
    assert not roles.may_manage("key_admin", "finance")
    # A role allowed outside the spec is stronger, whatever its actions.
    assert not roles.may_manage("key_admin", "robot")
    assert not roles.may_manage("key_admin", "no_such_role")
    assert roles.admin_actions("finance") == ["admin:usage"]
