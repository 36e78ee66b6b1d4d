"""The running service: store, delivery engine, intake and housekeeping, started and stopped
together. The API layer and the CLI both work through one :class:`Service`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import structlog

from hookline.api.auth import ApiKeys
from hookline.config import Settings
from hookline.delivery.engine import DeliveryEngine
from hookline.delivery.process_sender import ProcessSender
from hookline.delivery.sender import Sender
from hookline.delivery.wire import WorkerConfig
from hookline.destinations import DestinationPolicy
from hookline.errors import StoreError
from hookline.ingest import Intake
from hookline.metrics import DeliveryMetrics
from hookline.observers import Observers
from hookline.store import store_for
from hookline.store.base import Store
from hookline.stream import ChangeSignal

HOUSEKEEPING_INTERVAL_SECONDS = 60.0
SECONDS_PER_HOUR = 3_600

log = structlog.get_logger(__name__)


class Service:
    """Everything behind the API, wired from one :class:`Settings`."""

    def __init__(self, settings: Settings, store: Store | None = None) -> None:
        self.settings = settings
        self.store = store or store_for(settings)
        self.destinations = DestinationPolicy(
            settings.allowed_networks, https_only=settings.webhook_https_only
        )
        self.policies = settings.retry_policies()
        self.observers = Observers()
        self.engine = DeliveryEngine(
            self.store,
            _sender_for(settings, self.destinations),
            self.policies,
            worker_count=settings.webhook_worker_count,
            claim_rules=settings.claim_rules(),
            health_rules=settings.health_rules(),
            dlq_retention_days=settings.dlq_retention_days,
            observers=self.observers,
        )
        self.intake = Intake(
            self.store, settings.webhook_max_queue_size, self.engine.wake, self.observers
        )
        self.metrics = DeliveryMetrics(
            self.store,
            lambda: self.engine.in_flight,
            per_endpoint=settings.metrics_per_endpoint,
        )
        self.observers.add(self.metrics)
        self.changes = ChangeSignal()
        self.observers.add(self.changes)
        self.api_keys: ApiKeys | None = None
        self.shutting_down = False
        self._housekeeping: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.store.open()
        self.api_keys = ApiKeys.load(self.settings.api_key_list, self.settings.data_dir)
        await self.engine.start()
        await self.store.watch_for_work(self.engine.wake)
        self._housekeeping = asyncio.create_task(self._keep_house(), name="hookline-housekeeping")
        log.info(
            f"hookline started: data in {self.store.description}, listening on "
            f"http://{self.settings.host}:{self.settings.port}, "
            f"{self.settings.webhook_worker_count} delivery workers, "
            + _sending_description(self.settings),
            action="started",
        )

    async def stop(self) -> None:
        self.shutting_down = True
        if self._housekeeping is not None:
            self._housekeeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._housekeeping
        await self.engine.stop(self.settings.shutdown_grace_seconds)
        await self.store.close()

    async def purge(self) -> None:
        """Delete expired dead letters, idempotency keys and change-feed entries."""
        now = time.time()
        hours = self.settings
        purged = await self.store.purge_expired(
            now,
            idempotency_cutoff=now - hours.idempotency_retention_hours * SECONDS_PER_HOUR,
            changes_cutoff=now - hours.stream_retention_hours * SECONDS_PER_HOUR,
        )
        if purged.dead_letters or purged.idempotency_keys or purged.changes:
            log.info(
                "purged expired records",
                action="purged",
                dead_letters=purged.dead_letters,
                idempotency_keys=purged.idempotency_keys,
                changes=purged.changes,
            )

    async def _keep_house(self) -> None:
        while True:
            try:
                await self.purge()
            except StoreError as exc:
                log.warning("purge failed", action="purge_failed", error=str(exc))
            await asyncio.sleep(HOUSEKEEPING_INTERVAL_SECONDS)


def _sender_for(settings: Settings, destinations: DestinationPolicy) -> Sender:
    processes = settings.sender_processes
    config = WorkerConfig(
        allowed_networks=tuple(str(network) for network in destinations.allowed_networks),
        https_only=destinations.https_only,
        max_connections=settings.webhook_worker_count,
    )
    if processes and not settings.sender_processes_on_demand:
        return ProcessSender(config, processes)

    # Imported only here: with sending processes from the start, aiohttp stays out of the
    # main process.
    from hookline.delivery.http_sender import HttpSender
    from hookline.delivery.on_demand_sender import OnDemandSender

    local = HttpSender(destinations, max_connections=settings.webhook_worker_count)
    if processes == 0:
        return local
    return OnDemandSender(local, lambda: ProcessSender(config, processes))


def _sending_description(settings: Settings) -> str:
    processes = settings.sender_processes
    if processes == 0:
        return "sending from this process"
    children = f"{processes} child process{'es' if processes > 1 else ''}"
    if settings.sender_processes_on_demand:
        return f"sending from this process until the load calls for {children}"
    return f"sending from {children}"
