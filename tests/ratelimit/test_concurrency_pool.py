"""The concurrency plugin's slot pool: caps, FIFO hand-over, the bounded queue, timeouts and
cancellation, driven step by step on the event loop (no sleeping)."""

from __future__ import annotations

import asyncio

import pytest

from plugins.concurrency import Rejected, Slot, SlotPool


async def settle() -> None:
    """Let every ready task run until they all wait again."""
    for _ in range(5):
        await asyncio.sleep(0)


def start(pool: SlotPool, key: str = "", max_wait: float = 10.0) -> asyncio.Task[Slot]:
    return asyncio.get_running_loop().create_task(pool.acquire(key, max_wait))


async def test_requests_up_to_the_cap_go_at_once_and_the_rest_wait() -> None:
    pool = SlotPool(max_total=2, max_per_key=0, queue_size=10)
    first, second = pool.try_acquire("a"), pool.try_acquire("b")
    assert first is not None and second is not None
    assert pool.try_acquire("c") is None
    waiter = start(pool, "c")
    await settle()
    assert (pool.inflight, pool.waiting, waiter.done()) == (2, 1, False)
    first.release()
    slot = await waiter
    assert (pool.inflight, pool.waiting) == (2, 0)
    slot.release()
    second.release()
    assert (pool.inflight, pool.waiting) == (0, 0)


async def test_freed_slots_go_to_waiters_in_arrival_order_and_newcomers_cannot_overtake() -> None:
    pool = SlotPool(max_total=1, max_per_key=0, queue_size=10)
    holder = pool.try_acquire("")
    assert holder is not None
    waiters = [start(pool) for _ in range(3)]
    await settle()
    holder.release()
    # The slot was handed to the first waiter: it is taken even before that waiter runs.
    assert pool.try_acquire("") is None
    current = await waiters[0]
    for index in (1, 2):
        await settle()
        assert [w.done() for w in waiters[index:]] == [False] * (3 - index)
        current.release()
        current = await waiters[index]
    current.release()
    assert (pool.inflight, pool.waiting) == (0, 0)


async def test_a_full_queue_refuses_at_once() -> None:
    pool = SlotPool(max_total=1, max_per_key=0, queue_size=2)
    assert pool.try_acquire("") is not None
    queued = [start(pool), start(pool)]
    await settle()
    with pytest.raises(Rejected) as rejected:
        await pool.acquire("", 10.0)
    assert (rejected.value.reason, rejected.value.scope) == ("queue_full", "sidecar")
    for task in queued:
        task.cancel()
    await settle()
    assert pool.waiting == 0


async def test_no_queue_means_refusing_as_soon_as_the_cap_is_reached() -> None:
    pool = SlotPool(max_total=1, max_per_key=0, queue_size=0)
    assert pool.try_acquire("") is not None
    with pytest.raises(Rejected, match="queue_full"):
        await pool.acquire("", 10.0)


async def test_a_wait_that_runs_out_is_refused_and_leaves_nothing_behind() -> None:
    pool = SlotPool(max_total=1, max_per_key=0, queue_size=5)
    holder = pool.try_acquire("")
    assert holder is not None
    with pytest.raises(Rejected) as rejected:
        await pool.acquire("", 0.01)
    assert (rejected.value.reason, rejected.value.scope) == ("timeout", "sidecar")
    assert (pool.inflight, pool.waiting) == (1, 0)
    holder.release()
    assert pool.try_acquire("") is not None


async def test_a_cancelled_waiter_leaves_the_queue() -> None:
    pool = SlotPool(max_total=1, max_per_key=0, queue_size=5)
    holder = pool.try_acquire("")
    assert holder is not None
    gone, next_in_line = start(pool), start(pool)
    await settle()
    gone.cancel()
    await settle()
    assert pool.waiting == 1
    holder.release()
    (await next_in_line).release()
    assert (pool.inflight, pool.waiting) == (0, 0)


async def test_a_slot_handed_to_a_waiter_that_was_just_cancelled_passes_on() -> None:
    pool = SlotPool(max_total=1, max_per_key=0, queue_size=5)
    holder = pool.try_acquire("")
    assert holder is not None
    unlucky, lucky = start(pool), start(pool)
    await settle()
    holder.release()  # hands the slot to `unlucky`, which has not run yet ...
    unlucky.cancel()  # ... and is cancelled before it does
    slot = await lucky
    with pytest.raises(asyncio.CancelledError):
        await unlucky
    assert (pool.inflight, pool.waiting) == (1, 0)
    slot.release()
    assert pool.inflight == 0


async def test_release_is_idempotent() -> None:
    pool = SlotPool(max_total=2, max_per_key=1, queue_size=5)
    slot = pool.try_acquire("k")
    assert slot is not None
    slot.release()
    slot.release()
    assert (pool.inflight, pool.key_inflight("k")) == (0, 0)


async def test_a_caller_at_its_own_cap_waits_without_holding_up_others() -> None:
    pool = SlotPool(max_total=10, max_per_key=1, queue_size=5)
    mine = pool.try_acquire("a")
    assert mine is not None
    my_second = start(pool, "a")
    await settle()
    assert not my_second.done()
    theirs = await pool.acquire("b", 10.0)
    assert (pool.inflight, pool.key_inflight("a"), pool.key_inflight("b")) == (2, 1, 1)
    with pytest.raises(Rejected) as rejected:
        await pool.acquire("a", 0.01)
    assert rejected.value.scope == "key"
    mine.release()
    (await my_second).release()
    theirs.release()
    assert (pool.inflight, pool.key_inflight("a"), pool.waiting) == (0, 0, 0)


async def test_a_caller_waits_for_its_own_slot_then_in_line_for_the_sidecar() -> None:
    pool = SlotPool(max_total=1, max_per_key=1, queue_size=5)
    holder = pool.try_acquire("a")
    assert holder is not None
    other = start(pool, "b")    # waits for the sidecar-wide slot
    again = start(pool, "a")    # waits for its own slot first
    await settle()
    assert pool.waiting == 2
    holder.release()
    other_slot = await other    # the sidecar slot went to the one waiting for it ...
    await settle()
    assert not again.done()     # ... while "a" got its own slot and now waits for the sidecar
    assert pool.key_inflight("a") == 1
    other_slot.release()
    (await again).release()
    assert (pool.inflight, pool.key_inflight("a"), pool.waiting) == (0, 0, 0)


async def test_no_caps_count_but_never_wait() -> None:
    pool = SlotPool(max_total=0, max_per_key=0, queue_size=0)
    slots = [pool.try_acquire(str(i)) for i in range(1000)]
    assert all(slot is not None for slot in slots) and pool.inflight == 1000
    for slot in slots:
        assert slot is not None
        slot.release()
    assert pool.inflight == 0
