"""Console sessions end when they should: idle too long, open too long, or signed out; form
tokens work once each; the store holds no cookie value."""

from __future__ import annotations

from plugins.console.sessions import FORM_TOKENS, SessionStore


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _open(store: SessionStore, key_id: str = "k1") -> str:
    sid, _session = store.open("sk-sidecar-secret", key_id, "root", "acme", "admin",
                               ("admin:keys",))
    return sid


def test_sessions_expire_when_idle_and_at_their_age_limit() -> None:
    clock = Clock()
    store = SessionStore(idle_seconds=60, max_seconds=300, clock=clock)
    sid = _open(store)
    for _ in range(5):
        clock.now += 50
        assert store.find(sid) is not None
    clock.now += 51
    assert store.find(sid) is None, "open longer than max_seconds"

    sid = _open(store)
    clock.now += 61
    assert store.find(sid) is None, "idle longer than idle_seconds"
    assert len(store) == 0


def test_sign_out_ends_one_session_only() -> None:
    store = SessionStore(idle_seconds=60, max_seconds=300, clock=Clock())
    first, second = _open(store), _open(store)
    store.close(first)
    assert store.find(first) is None and store.find(second) is not None
    store.clear()
    assert store.find(second) is None
    assert store.find(None) is None and store.find("") is None and store.find("nope") is None


def test_form_tokens_are_single_use_and_bounded() -> None:
    store = SessionStore(idle_seconds=60, max_seconds=300, clock=Clock())
    session = store.find(_open(store))
    assert session is not None
    token = session.issue_token()
    assert session.redeem_token(token)
    assert not session.redeem_token(token)
    assert not session.redeem_token(None) and not session.redeem_token("")
    oldest = session.issue_token()
    for _ in range(FORM_TOKENS):
        session.issue_token()
    assert not session.redeem_token(oldest), "the oldest token is dropped"


def test_the_store_keeps_no_cookie_value_and_repr_shows_no_key() -> None:
    store = SessionStore(idle_seconds=60, max_seconds=300, clock=Clock())
    sid = _open(store)
    session = store.find(sid)
    assert sid not in repr(vars(store)) and "sk-sidecar" not in repr(session)
