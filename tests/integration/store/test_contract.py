"""What every store must do, run against each kind of store."""

from __future__ import annotations

import time

import pytest

from hookline.errors import Conflict, NotFound
from hookline.ids import new_id
from hookline.ingest import webhook_body, webhook_timestamp
from hookline.models import (
    AttemptOutcome,
    AttemptResult,
    AttemptVerdict,
    ChangeKind,
    ClaimedDelivery,
    DeliveryStatus,
    Endpoint,
    NewEvent,
)
from hookline.protection.breaker import BreakerPolicy
from hookline.store.base import (
    ChangeFilter,
    ClaimRules,
    DeadLetterFilter,
    DeliveryFilter,
    HealthRules,
    IdempotencyKey,
    Store,
)

LEASE_MARGIN = 30.0
RULES = ClaimRules(max_in_flight=100, lease_margin_seconds=LEASE_MARGIN)
HEALTH = HealthRules(BreakerPolicy(), disable_after_seconds=None, dead_letter_seconds=3600)


def endpoint(events: list[str] | None = None, **fields: object) -> Endpoint:
    now = time.time()
    return Endpoint(
        id=new_id("ep"),
        url="https://example.com/hook",
        secret="s3cret-s3cret",
        events=events or ["*"],
        created_at=now,
        updated_at=now,
        **fields,  # type: ignore[arg-type]
    )


def event(event_type: str = "user.created", event_id: str | None = None) -> NewEvent:
    now = time.time()
    event_id = event_id or new_id("evt")
    return NewEvent(
        event_id,
        event_type,
        now,
        webhook_body(event_id, event_type, webhook_timestamp(now), {"n": 1}),
    )


def verdict(
    claim: ClaimedDelivery, status: DeliveryStatus, next_at: float | None = None
) -> AttemptVerdict:
    outcome = (
        AttemptOutcome.SUCCESS
        if status is DeliveryStatus.DELIVERED
        else (AttemptOutcome.HTTP_ERROR)
    )
    result = AttemptResult(outcome, time.time(), 5.0, status_code=200, error=None)
    expires = time.time() + 3600 if status is DeliveryStatus.FAILED else None
    return AttemptVerdict(claim, result, status, next_at, expires)


async def claim(
    store: Store, now: float | None = None, limit: int = 10, rules: ClaimRules | None = None
) -> list[ClaimedDelivery]:
    return await store.claim_due(now or time.time(), limit, {}, rules or RULES)


async def record(
    store: Store, verdicts: list[AttemptVerdict], rules: HealthRules = HEALTH
) -> list[bool]:
    return (await store.record_verdicts(verdicts, rules)).applied


async def test_accept_fans_out_to_matching_enabled_endpoints(store: Store) -> None:
    users = await store.create_endpoint(endpoint(["user.*"]))
    await store.create_endpoint(endpoint(["order.*"]))
    await store.create_endpoint(endpoint(["*"], enabled=False))

    [accepted] = await store.accept_events([event("user.created")], None, time.time())

    assert [d.endpoint_id for d in accepted.deliveries] == [users.id]
    assert accepted.deliveries[0].status is DeliveryStatus.PENDING


async def test_claim_then_delivered_verdict(store: Store) -> None:
    await store.create_endpoint(endpoint())
    [accepted] = await store.accept_events([event()], None, time.time())

    [claimed] = await claim(store)
    applied = await record(store, [verdict(claimed, DeliveryStatus.DELIVERED)])

    assert applied == [True]
    assert claimed.attempt == 1
    delivery, attempts = await store.get_delivery(accepted.deliveries[0].id)
    assert delivery.status is DeliveryStatus.DELIVERED
    assert [a.number for a in attempts] == [1]
    assert await store.count_pending() == 0


async def test_claimed_delivery_is_not_claimed_again_until_its_lease_expires(store: Store) -> None:
    await store.create_endpoint(endpoint(timeout_seconds=5.0))
    await store.accept_events([event()], None, time.time())
    now = time.time()

    [first] = await claim(store, now)
    assert await claim(store, now + 1) == []
    [second] = await claim(store, now + 5.0 + LEASE_MARGIN + 1)

    assert second.delivery_id == first.delivery_id
    assert second.attempt == 2
    assert second.lease_token != first.lease_token


async def test_late_verdict_from_an_expired_lease_is_discarded(store: Store) -> None:
    await store.create_endpoint(endpoint(timeout_seconds=1.0))
    await store.accept_events([event()], None, time.time())
    now = time.time()
    [stale] = await claim(store, now)
    [current] = await claim(store, now + 1.0 + LEASE_MARGIN + 1)

    applied = await record(
        store, [verdict(current, DeliveryStatus.DELIVERED), verdict(stale, DeliveryStatus.FAILED)]
    )

    assert applied == [True, False]
    delivery, attempts = await store.get_delivery(current.delivery_id)
    assert delivery.status is DeliveryStatus.DELIVERED
    assert [a.number for a in attempts] == [2]
    assert (await store.list_dead_letters(DeadLetterFilter(), None, 10)).items == []


async def test_claim_keeps_each_endpoint_within_its_cap(store: Store) -> None:
    busy_one = await store.create_endpoint(endpoint(["a"]))
    other = await store.create_endpoint(endpoint(["b"]))
    await store.accept_events([event("a") for _ in range(5)] + [event("b")], None, time.time())

    capped = ClaimRules(max_in_flight=2, lease_margin_seconds=LEASE_MARGIN)
    claimed = await store.claim_due(time.time(), 10, {busy_one.id: 1}, capped)

    per_endpoint = [c.endpoint_id for c in claimed]
    assert per_endpoint.count(busy_one.id) == 1
    assert per_endpoint.count(other.id) == 1


async def test_release_gives_the_lease_back_without_charging_an_attempt(store: Store) -> None:
    await store.create_endpoint(endpoint())
    await store.accept_events([event()], None, time.time())
    [claimed] = await claim(store)

    await store.release([claimed], time.time())
    [again] = await claim(store)

    assert again.attempt == 1


async def test_retry_verdict_schedules_the_next_attempt(store: Store) -> None:
    await store.create_endpoint(endpoint())
    await store.accept_events([event()], None, time.time())
    [claimed] = await claim(store)
    later = time.time() + 60

    await record(store, [verdict(claimed, DeliveryStatus.PENDING, later)])

    assert await claim(store) == []
    assert await store.next_due_at() == pytest.approx(later)
    assert len(await claim(store, later + 1)) == 1


async def test_failed_verdict_creates_a_dead_letter_that_replays(store: Store) -> None:
    target = await store.create_endpoint(endpoint())
    [accepted] = await store.accept_events([event("payment.failed")], None, time.time())
    [claimed] = await claim(store)
    await record(store, [verdict(claimed, DeliveryStatus.FAILED)])

    [message] = (await store.list_dead_letters(DeadLetterFilter(), None, 10)).items
    assert message.event_id == accepted.event_id
    assert message.endpoint_id == target.id
    assert message.payload == {"n": 1}

    fresh = await store.replay_dead_letter(message.id, time.time())

    assert fresh.event_id == accepted.event_id and fresh.id != claimed.delivery_id
    with pytest.raises(NotFound):
        await store.get_dead_letter(message.id)
    [reclaimed] = await claim(store)
    assert reclaimed.delivery_id == fresh.id and reclaimed.attempt == 1


async def test_idempotency_key_returns_the_first_result(store: Store) -> None:
    await store.create_endpoint(endpoint())
    key = IdempotencyKey("key-1", "hash-a")

    [first] = await store.accept_events([event()], key, time.time())
    [repeat] = await store.accept_events([event()], key, time.time())

    assert repeat.event_id == first.event_id and repeat.created is False
    assert [d.id for d in repeat.deliveries] == [d.id for d in first.deliveries]
    with pytest.raises(Conflict, match="different request body"):
        await store.accept_events([event()], IdempotencyKey("key-1", "hash-b"), time.time())


async def test_batch_with_a_duplicate_id_stores_nothing(store: Store) -> None:
    await store.create_endpoint(endpoint())
    await store.accept_events([event(event_id="evt_taken")], None, time.time())

    with pytest.raises(Conflict, match="evt_taken"):
        await store.accept_events(
            [event(event_id="evt_new"), event(event_id="evt_taken")], None, time.time()
        )

    with pytest.raises(NotFound):
        await store.get_event("evt_new")
    assert await store.count_pending() == 1


async def test_deleting_an_endpoint_fails_its_pending_deliveries(store: Store) -> None:
    target = await store.create_endpoint(endpoint())
    [accepted] = await store.accept_events([event()], None, time.time())

    await store.delete_endpoint(target.id, time.time())

    delivery, _ = await store.get_delivery(accepted.deliveries[0].id)
    assert delivery.status is DeliveryStatus.FAILED
    assert await claim(store) == []
    with pytest.raises(NotFound):
        await store.get_endpoint(target.id)


async def test_list_deliveries_filters_and_pages(store: Store) -> None:
    first = await store.create_endpoint(endpoint(["a"]))
    await store.create_endpoint(endpoint(["b"]))
    await store.accept_events([event("a") for _ in range(5)] + [event("b")], None, time.time())

    seen = []
    cursor = None
    while True:
        page = await store.list_deliveries(DeliveryFilter(endpoint_id=first.id), cursor, 2)
        seen.extend(page.items)
        cursor = page.next_cursor
        if cursor is None:
            break

    assert len(seen) == 5 and len({d.id for d in seen}) == 5
    assert all(d.endpoint_id == first.id for d in seen)


async def test_purge_removes_expired_dead_letters_and_old_idempotency_keys(store: Store) -> None:
    await store.create_endpoint(endpoint())
    await store.accept_events([event()], IdempotencyKey("old", "h"), time.time())
    [claimed] = await claim(store)
    await record(store, [verdict(claimed, DeliveryStatus.FAILED)])

    purged = await store.purge_expired(time.time() + 7200, time.time() + 1, 0.0)

    assert (purged.dead_letters, purged.idempotency_keys) == (1, 1)
    assert (await store.stats(time.time())).dead_letters == 0


async def test_stats_count_what_is_stored(store: Store) -> None:
    await store.create_endpoint(endpoint())
    await store.create_endpoint(endpoint(enabled=False))
    await store.accept_events([event(), event()], None, time.time())
    claimed = await claim(store, limit=1)

    stats = await store.stats(time.time())

    assert (stats.pending, stats.in_flight) == (2, len(claimed))
    assert (stats.endpoints, stats.endpoints_enabled) == (2, 1)


async def test_a_capped_endpoints_backlog_does_not_starve_the_others(store: Store) -> None:
    flooded = await store.create_endpoint(endpoint(["flood"]))
    quiet = await store.create_endpoint(endpoint(["quiet"]))
    await store.accept_events([event("flood") for _ in range(60)], None, time.time() - 10)
    await store.accept_events([event("quiet")], None, time.time())

    capped = ClaimRules(max_in_flight=2, lease_margin_seconds=LEASE_MARGIN)
    claimed = await store.claim_due(time.time(), 5, {flooded.id: 2}, capped)

    assert [c.endpoint_id for c in claimed] == [quiet.id]


async def test_change_feed_numbers_every_state_change_in_order(store: Store) -> None:
    first = await store.create_endpoint(endpoint(["a"]))
    await store.create_endpoint(endpoint(["b"]))
    start = await store.latest_change_seq()
    await store.accept_events([event("a"), event("b")], None, time.time())
    [claimed] = await claim(store, limit=1)
    await record(store, [verdict(claimed, DeliveryStatus.DELIVERED)])

    changes = await store.changes_since(start, ChangeFilter(), 100)
    only_first = await store.changes_since(start, ChangeFilter(endpoint_id=first.id), 100)

    assert [c.change for c in changes] == [
        ChangeKind.ACCEPTED,
        ChangeKind.ACCEPTED,
        ChangeKind.DELIVERED,
    ]
    assert [c.seq for c in changes] == sorted({c.seq for c in changes})
    assert await store.latest_change_seq() == changes[-1].seq
    assert {c.endpoint_id for c in only_first} == {first.id}
    assert await store.changes_since(changes[-1].seq, ChangeFilter(), 100) == []
    purged = await store.purge_expired(time.time(), 0.0, changes_cutoff=time.time() + 1)
    assert purged.changes == 3
