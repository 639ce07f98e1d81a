"""The key pool's rotation and cool-down, with an injected clock."""

from __future__ import annotations

import pytest

from plugins.keypool import MAX_COOLDOWN_SECONDS, KeyPool


class Clock:
    """Monotonic time moved by hand."""

    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


Events = list[tuple[int, int, float]]


def pool(keys: int = 3, cooldown: float = 60.0) -> tuple[KeyPool, Clock, Events]:
    """A pool of keys k0, k1 ... with a hand-moved clock and the cool-downs it reported."""
    clock = Clock()
    events: Events = []
    made = KeyPool([f"k{i}" for i in range(keys)], cooldown, clock=clock,
                   on_cooldown=lambda *e: events.append(e))
    return made, clock, events


def test_round_robin_per_request() -> None:
    keys, _, _ = pool(3)
    assert [keys.pick(set()) for _ in range(7)] == [0, 1, 2, 0, 1, 2, 0]


def test_membership_tells_pool_keys_from_callers_keys() -> None:
    keys, _, _ = pool(2)
    assert keys.manages("k1") and not keys.manages("caller-own-key")
    assert not keys.manages(None)


def test_a_cooling_key_is_skipped_until_its_cooldown_ends() -> None:
    keys, clock, events = pool(3, cooldown=60.0)
    keys.cool(1, 429, None)
    assert events == [(1, 429, 60.0)]
    assert [keys.pick(set()) for _ in range(4)] == [0, 2, 0, 2]
    assert keys.cooling() == 1
    clock.now += 60.0
    assert keys.cooling() == 0
    assert [keys.pick(set()) for _ in range(3)] == [0, 1, 2]


def test_retry_after_sets_the_cooldown_within_a_cap() -> None:
    keys, clock, _ = pool(2, cooldown=60.0)
    assert keys.cool(0, 429, 5.0) == 5.0
    clock.now += 5.0
    assert not keys.is_cooling(0)
    assert keys.cool(1, 429, 10 * 86400.0) == MAX_COOLDOWN_SECONDS


def test_a_request_moves_on_to_keys_it_has_not_tried() -> None:
    keys, _, _ = pool(3)
    tried: list[int] = []
    for status in (401, 429, 429):
        index = keys.pick(set(tried))
        assert index is not None
        tried.append(index)
        keys.cool(index, status, None)
    assert tried == [0, 1, 2]
    assert keys.pick(set(tried)) is None


def test_when_every_key_cools_the_one_recovering_first_is_used() -> None:
    keys, clock, _ = pool(3)
    keys.cool(0, 429, 30.0)
    keys.cool(1, 429, 10.0)
    keys.cool(2, 429, 20.0)
    assert keys.pick(set()) == 1
    clock.now += 10.0
    assert keys.pick(set()) == 1


@pytest.mark.parametrize("keys", [0, 1])
def test_tiny_pools(keys: int) -> None:
    made, _, _ = pool(keys)
    assert len(made) == keys and made.cooling() == 0
