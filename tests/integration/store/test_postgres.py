"""What is particular to the PostgreSQL store: several instances sharing one database."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator

import asyncpg
import pytest

from hookline.errors import StoreUnavailable
from hookline.store.base import ChangeFilter, IdempotencyKey
from hookline.store.postgres import PostgresStore
from hookline.store.postgres.connection import LOCK_NAMESPACE, Lock
from hookline.store.postgres.notify import LISTENER_APPLICATION_NAME
from tests.integration.store.test_contract import claim, endpoint, event
from tests.postgres import postgres_url  # noqa: F401  (a fixture)

INSTANCES = 3
DELIVERIES = 300
CLAIM_BATCH = 7
WAKE_SECONDS = 2.0
"""Longer than a notification takes, shorter than any test could pass by polling instead."""


@pytest.fixture
async def instances(postgres_url: str) -> AsyncIterator[list[PostgresStore]]:  # noqa: F811
    """Three opened stores on one database, as three hookline processes would have."""
    stores = [PostgresStore(postgres_url, 1, 4) for _ in range(INSTANCES)]
    for store in stores:
        await store.open()
    yield stores
    for store in stores:
        await store.close()


class Waker:
    """A ``wake`` callback that a test can wait on."""

    def __init__(self) -> None:
        self.calls = 0
        self._called = asyncio.Event()

    def __call__(self) -> None:
        self.calls += 1
        self._called.set()

    async def wait(self, timeout: float = WAKE_SECONDS) -> None:
        await asyncio.wait_for(self._called.wait(), timeout)
        self._called.clear()


async def test_instances_claiming_at_once_never_share_a_delivery(
    instances: list[PostgresStore],
) -> None:
    first = instances[0]
    await first.create_endpoint(endpoint())
    await first.accept_events([event() for _ in range(DELIVERIES)], None, time.time())

    async def drain(store: PostgresStore) -> list[str]:
        taken = []
        while batch := await claim(store, limit=CLAIM_BATCH):
            taken += [c.delivery_id for c in batch]
        return taken

    claimed = await asyncio.gather(*(drain(store) for store in instances))

    everything = [delivery_id for batch in claimed for delivery_id in batch]
    twice = [d for d, n in Counter(everything).items() if n > 1]
    assert twice == [], f"{len(twice)} deliveries were claimed by two instances"
    assert len(everything) == DELIVERIES
    assert all(claimed), "every instance got a share of the work"


async def test_new_work_on_one_instance_wakes_the_others(instances: list[PostgresStore]) -> None:
    producer, listener = instances[0], instances[1]
    await producer.create_endpoint(endpoint())
    wake = Waker()
    await listener.watch_for_work(wake)
    await wake.wait()  # the listener looks once as soon as it is listening

    await producer.accept_events([event()], None, time.time())

    await wake.wait()


async def test_an_instance_does_not_wake_itself_twice(instances: list[PostgresStore]) -> None:
    store = instances[0]
    await store.create_endpoint(endpoint())
    wake = Waker()
    await store.watch_for_work(wake)
    await wake.wait()

    await store.accept_events([event()], None, time.time())
    await asyncio.sleep(0.5)

    assert wake.calls == 1


async def test_listening_resumes_after_its_connection_is_killed(
    instances: list[PostgresStore],
    postgres_url: str,  # noqa: F811
) -> None:
    producer, listener = instances[0], instances[1]
    await producer.create_endpoint(endpoint())
    wake = Waker()
    await listener.watch_for_work(wake)
    await wake.wait()

    admin = await asyncpg.connect(postgres_url)
    try:
        killed = await admin.fetchval(
            "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = $1",
            LISTENER_APPLICATION_NAME,
        )
    finally:
        await admin.close()
    assert killed == 1
    await wake.wait()  # reconnected, and looked once in case something was missed

    await producer.accept_events([event()], None, time.time())
    await wake.wait()


async def test_a_purge_already_running_elsewhere_is_not_repeated(
    instances: list[PostgresStore],
    postgres_url: str,  # noqa: F811
) -> None:
    store = instances[0]
    await store.create_endpoint(endpoint())
    await store.accept_events([event()], IdempotencyKey("old", "h"), time.time())
    later = time.time() + 1

    # Another instance is in the middle of its purge.
    other = await asyncpg.connect(postgres_url)
    try:
        await other.execute("SELECT pg_advisory_lock($1, $2)", LOCK_NAMESPACE, int(Lock.PURGE))
        skipped = await instances[1].purge_expired(later, later, later)
    finally:
        await other.close()
    done = await instances[2].purge_expired(later, later, later)

    assert (skipped.dead_letters, skipped.idempotency_keys) == (0, 0)
    assert done.idempotency_keys == 1


async def test_the_same_idempotency_key_on_every_instance_creates_one_event(
    instances: list[PostgresStore],
) -> None:
    await instances[0].create_endpoint(endpoint())
    key = IdempotencyKey("retried-request", "same-body")

    answers = await asyncio.gather(
        *(store.accept_events([event()], key, time.time()) for store in instances)
    )

    event_ids = {accepted.event_id for [accepted] in answers}
    assert len(event_ids) == 1
    assert sorted(accepted.created for [accepted] in answers) == [False, False, True]
    assert await instances[0].count_pending() == 1


async def test_deleting_an_endpoint_while_events_fan_out_leaves_nothing_pending(
    instances: list[PostgresStore],
) -> None:
    target = await instances[0].create_endpoint(endpoint())

    async def keep_accepting(store: PostgresStore) -> None:
        for _ in range(20):
            await store.accept_events([event() for _ in range(5)], None, time.time())

    await asyncio.gather(
        keep_accepting(instances[0]),
        keep_accepting(instances[1]),
        instances[2].delete_endpoint(target.id, time.time()),
    )

    assert await instances[0].count_pending() == 0


async def test_the_store_answers_again_after_its_connections_are_killed(
    instances: list[PostgresStore],
    postgres_url: str,  # noqa: F811
) -> None:
    store = instances[0]
    admin = await asyncpg.connect(postgres_url)
    try:
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    finally:
        await admin.close()

    # A call may still meet a connection that died under it; it fails as unavailable, and
    # the pool replaces the connection.
    for _ in range(5):
        try:
            await store.ping()
            break
        except StoreUnavailable:
            await asyncio.sleep(0.1)
    await store.create_endpoint(endpoint())
    assert (await store.stats(time.time())).endpoints == 1


async def test_one_listening_instance_keeps_house_and_the_others_leave_the_purge_to_it(
    instances: list[PostgresStore],
) -> None:
    await instances[0].create_endpoint(endpoint())
    wakers = [Waker() for _ in instances]
    for store, waker in zip(instances, wakers, strict=True):
        await store.watch_for_work(waker)
    await instances[0].accept_events([event()], IdempotencyKey("old", "h"), time.time())
    later = time.time() + 1

    # The listeners check for the lock as soon as they are listening, once each.
    await asyncio.gather(*(waker.wait() for waker in wakers))
    await asyncio.sleep(0.2)
    purged = [await store.purge_expired(later, later, later) for store in instances]

    assert sum(store._signal.keeps_house for store in instances) == 1
    assert sorted(p.idempotency_keys for p in purged) == [0, 0, 1]


async def test_a_reader_of_the_change_feed_never_skips_a_change_written_elsewhere(
    instances: list[PostgresStore],
) -> None:
    await instances[0].create_endpoint(endpoint())
    writing = True
    seen: list[int] = []

    async def write(store: PostgresStore) -> None:
        for _ in range(30):
            await store.accept_events([event(), event()], None, time.time())

    async def read() -> None:
        # Like a stream client: resume after the last number seen, never look back.
        last = 0
        while writing or await instances[2].changes_since(last, ChangeFilter(), 1000):
            for change in await instances[2].changes_since(last, ChangeFilter(), 1000):
                seen.append(change.seq)
                last = change.seq
            await asyncio.sleep(0)

    reader = asyncio.create_task(read())
    await asyncio.gather(*(write(store) for store in instances))
    writing = False
    await reader

    written = await instances[0].changes_since(0, ChangeFilter(), 10_000)
    assert seen == [change.seq for change in written]
    assert len(seen) == INSTANCES * 30 * 2
