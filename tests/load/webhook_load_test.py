"""End-to-end load test: how close hookline comes to a bare sender, and how fast it delivers.

One run has two phases against the same local receiver (``receiver.py``, pinned to one CPU):

* **ceiling**: a bare aiohttp sender, no storage, posts signed JSON with keep-alive. Its rate is
  what this machine's Python HTTP stack can do at all, the bound hookline is measured against.
* **hookline**: the real server (``python -m hookline serve``) on a throwaway SQLite database.
  Events go in through the API; latency per delivery is the receiver's first 2xx receipt minus
  the moment the client saw the event's 202.

Every wait is bounded by a count and by ``--timeout``; a run cut short still reports what it
measured and says it is incomplete. All traffic stays on 127.0.0.1. See README.md here.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import math
import multiprocessing
import os
import secrets
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import receiver
from hookline_server import (
    EVENT_TYPE,
    LOCALHOST,
    Deadline,
    Ingest,
    LoadTestError,
    ServerProcess,
    ingest_at_rate,
    ingest_in_batches,
    register_endpoints,
    webhook_payload,
)
from load_stats import (
    delivery_latencies,
    hook_receipts,
    latency_percentiles_ms,
    per_second,
    ratio_of,
    shown,
    summary_line,
)

CEILING_PATH = "/ceiling"
CEILING_MAX_SECONDS = 15.0
RECEIVER_START_SECONDS = 15.0
RECEIVER_STOP_SECONDS = 5.0
RECEIVER_ANSWER_SECONDS = 30.0
PROGRESS_POLL_SECONDS = 0.2
PROGRESS_PRINT_SECONDS = 5.0
STALL_SECONDS = 60.0
"""Give up waiting once no delivery has arrived for this long after ingest ended."""
REQUEST_TIMEOUT_SECONDS = 30.0
RATE_MODE_MAX_CONNECTIONS = 256
SECRET_BYTES = 32
EXIT_COMPLETE = 0
EXIT_INCOMPLETE = 1
EXIT_ERROR = 2


# --- options ---------------------------------------------------------------------------------


def parse_server_env(items: Sequence[str]) -> dict[str, str]:
    """Turn repeated ``KEY=VALUE`` options into a dict; raise ValueError on a malformed one."""
    extras: dict[str, str] = {}
    for item in items:
        key, equals, value = item.partition("=")
        if not equals or not key:
            raise ValueError(f"--server-env expects KEY=VALUE, got {item!r}.")
        extras[key] = value
    return extras


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Measure hookline's delivery rate and latency against a bare sender.",
    )
    add = parser.add_argument
    add("--deliveries", type=int, default=50_000, help="deliveries to reach the receiver (N)")
    add("--fanout", type=int, default=1, help="endpoints per event (K); N/K events are sent")
    add(
        "--rate",
        type=float,
        default=None,
        help="open loop: single events at this many per second (default: batches, flat out)",
    )
    add(
        "--fail-rate",
        type=float,
        default=0.0,
        help="fraction of first attempts the receiver answers 503",
    )
    add("--database-url", default=None, help="default: SQLite in a temporary directory")
    add("--batch-size", type=int, default=100, help="events per batch request")
    add("--ingest-tasks", type=int, default=4, help="concurrent batch requests")
    add(
        "--concurrency",
        type=int,
        default=64,
        help="connections of the ceiling sender, and hookline's WEBHOOK_WORKER_COUNT and "
        "WEBHOOK_ENDPOINT_CONCURRENCY, so both sides keep as many requests in flight",
    )
    add("--timeout", type=float, default=300.0, help="seconds before the run stops, incomplete")
    add("--receiver-core", type=int, default=None, help="CPU for the receiver (default: last)")
    add("--skip-ceiling", action="store_true", help="do not run the bare-sender phase")
    add("--skip-hookline", action="store_true", help="do not start the server")
    add("--json", default=None, metavar="PATH", help="also write the results here as JSON")
    add(
        "--server-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for the server (repeatable)",
    )
    return parser


def parse_options(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse and check the command line; exits with a message on a bad value."""
    parser = build_parser()
    options = parser.parse_args(argv)

    problems = []
    if options.deliveries < 1:
        problems.append("--deliveries must be at least 1")
    if options.fanout < 1:
        problems.append("--fanout must be at least 1")
    if options.rate is not None and options.rate <= 0:
        problems.append("--rate must be positive")
    if not 0.0 <= options.fail_rate < 1.0:
        problems.append("--fail-rate must be in [0, 1)")
    if min(options.batch_size, options.ingest_tasks, options.concurrency) < 1:
        problems.append("--batch-size, --ingest-tasks and --concurrency must be at least 1")
    if options.timeout <= 0:
        problems.append("--timeout must be positive")
    cpus = os.sched_getaffinity(0)
    if options.receiver_core is not None and options.receiver_core not in cpus:
        problems.append(f"--receiver-core must be one of the CPUs {sorted(cpus)}")
    try:
        options.server_env_map = parse_server_env(options.server_env)
    except ValueError as exc:
        problems.append(str(exc))
    if problems:
        parser.error("; ".join(problems))
    return options


def settings_of(options: argparse.Namespace) -> dict[str, Any]:
    """Every option as used, for the JSON report."""
    settings = {k: v for k, v in vars(options).items() if k != "server_env_map"}
    settings["server_env"] = options.server_env_map
    return settings


def progress(message: str) -> None:
    """Running commentary goes to stderr, so stdout holds only the summary line."""
    print(message, file=sys.stderr, flush=True)


# --- the receiver process ---------------------------------------------------------------------


class ReceiverHandle:
    """The receiver child process and the pipe that drives it."""

    def __init__(self, core: int, fail_rate: float) -> None:
        # A fresh interpreter rather than a fork: nothing of this process leaks into it.
        context = multiprocessing.get_context("spawn")
        self.conn, child_conn = context.Pipe()
        self.process = context.Process(
            target=receiver.run_child,
            args=(child_conn, 0, core, fail_rate),
            name="hookline-load-receiver",
            daemon=True,
        )
        self.process.start()
        child_conn.close()
        # The pipe carries one request and one answer at a time; threads take turns.
        self.lock = threading.Lock()
        self.port, self.core = self.wait_ready()

    def wait_ready(self) -> tuple[int, int]:
        if not self.conn.poll(RECEIVER_START_SECONDS):
            self.process.kill()
            raise LoadTestError("The receiver process did not start within its time limit.")
        try:
            tag, port, core = self.conn.recv()
        except EOFError as exc:
            self.process.join(timeout=RECEIVER_STOP_SECONDS)
            raise LoadTestError(
                f"The receiver process exited with code {self.process.exitcode} while starting; "
                "its traceback is above."
            ) from exc
        if tag != "ready":
            raise LoadTestError(f"The receiver sent {tag!r} instead of announcing its port.")
        return int(port), int(core)

    def ask(self, *command: Any) -> Any:
        with self.lock:
            self.conn.send(command)
            if not self.conn.poll(RECEIVER_ANSWER_SECONDS):
                raise LoadTestError(
                    f"The receiver did not answer {command[0]!r} within "
                    f"{RECEIVER_ANSWER_SECONDS:.0f} s; it may have crashed."
                )
            return self.conn.recv()

    async def ask_async(self, *command: Any) -> Any:
        """Ask without blocking the event loop while the receiver answers."""
        return await asyncio.to_thread(self.ask, *command)

    def stop(self) -> None:
        # A receiver that already died has nothing more to say; joining it is enough.
        with contextlib.suppress(OSError, EOFError, LoadTestError):
            self.ask("stop")
        self.process.join(timeout=RECEIVER_STOP_SECONDS)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout=RECEIVER_STOP_SECONDS)


def choose_receiver_core(requested: int | None) -> int:
    """The CPU given on the command line, else the last one this process may use."""
    if requested is not None:
        return requested
    return max(os.sched_getaffinity(0))


# --- ceiling phase ----------------------------------------------------------------------------


def signed_request(secret: bytes, webhook_id: str, seq: int) -> tuple[bytes, dict[str, str]]:
    """A body and headers shaped like a hookline delivery, signed per request as it would be."""
    now = time.time()
    timestamp = str(int(now))
    body = orjson.dumps(
        {
            "id": webhook_id,
            "type": EVENT_TYPE,
            "timestamp": datetime.fromtimestamp(now, UTC).isoformat(),
            "data": webhook_payload(seq),
        }
    )
    # hookline signs each attempt twice, a plain body HMAC and the Standard Webhooks one.
    body_digest = hmac.new(secret, body, hashlib.sha256).hexdigest()
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret, signed, hashlib.sha256).digest()
    headers = {
        "content-type": "application/json",
        "x-webhook-signature": "sha256=" + body_digest,
        "webhook-id": webhook_id,
        "webhook-timestamp": timestamp,
        "webhook-signature": "v1," + base64.b64encode(digest).decode(),
        "x-webhook-attempt": "1",
    }
    return body, headers


@dataclass(slots=True)
class CeilingResult:
    sent: int = 0
    answered_ok: int = 0
    errors: int = 0
    seconds: float = 0.0
    body_bytes: int = 0
    cut_short_by: str | None = None
    received: int = 0
    duplicates: int = 0

    @property
    def per_s(self) -> float | None:
        return per_second(self.answered_ok, self.seconds)


async def measure_ceiling(
    receiver_port: int, count: int, concurrency: int, deadline: Deadline
) -> CeilingResult:
    """Post ``count`` signed bodies (or as many as fit the time cap) with no storage at all."""
    url = f"http://{LOCALHOST}:{receiver_port}{CEILING_PATH}"
    secret = secrets.token_bytes(SECRET_BYTES)
    result = CeilingResult(body_bytes=len(signed_request(secret, "evt_probe", 0)[0]))
    stop_at = time.monotonic() + min(CEILING_MAX_SECONDS, deadline.remaining())

    async def send_until_done(session: aiohttp.ClientSession) -> None:
        while result.sent < count:
            if deadline.expired():
                result.cut_short_by = deadline.reason
                return
            if time.monotonic() >= stop_at:
                result.cut_short_by = f"the {CEILING_MAX_SECONDS:g} s cap of this phase"
                return
            result.sent += 1
            body, headers = signed_request(secret, f"evt_ceiling_{result.sent}", result.sent)
            try:
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    result.answered_ok += response.status == 200
            except (TimeoutError, aiohttp.ClientError):
                result.errors += 1

    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        started = time.monotonic()
        await asyncio.gather(*(send_until_done(session) for _ in range(concurrency)))
        result.seconds = time.monotonic() - started
    return result


async def run_ceiling(
    receiver_handle: ReceiverHandle, options: argparse.Namespace, deadline: Deadline
) -> CeilingResult:
    """The ceiling phase, cross-checked against what the receiver itself counted."""
    await receiver_handle.ask_async("reset", 0.0)
    result = await measure_ceiling(
        receiver_handle.port, options.deliveries, options.concurrency, deadline
    )
    counted = await receiver_handle.ask_async("summary")
    result.received = counted["delivered"]
    result.duplicates = counted["duplicates"]
    return result


def describe_ceiling(result: CeilingResult, concurrency: int) -> str:
    capped = f", stopped by {result.cut_short_by}" if result.cut_short_by else ""
    return (
        f"ceiling: {result.answered_ok}/{result.sent} answered 200 ({result.errors} errors, "
        f"{result.received} recorded by the receiver) in {result.seconds:.2f} s, "
        f"{result.body_bytes} B bodies over {concurrency} connections{capped}"
    )


# --- hookline phase ---------------------------------------------------------------------------


@dataclass(slots=True)
class HooklineResult:
    per_s: float | None = None
    ingest_per_s: float | None = None
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    peak_rss_mb: float | None = None
    server_processes: int = 0
    duplicates: int = 0
    delivered: int = 0
    expected: int = 0
    events_accepted: int = 0
    deliveries_reported: int = 0
    failed_first_attempts: int = 0
    throttled: int = 0
    unmatched: int = 0
    max_send_lag_ms: float | None = None
    server_exit_code: int | None = None
    server_stop_seconds: float | None = None
    incomplete_reason: str | None = None


async def run_hookline(
    receiver_handle: ReceiverHandle, options: argparse.Namespace, deadline: Deadline
) -> HooklineResult:
    """Start the server, push N deliveries through it, measure, and stop it."""
    total_events = math.ceil(options.deliveries / options.fanout)
    result = HooklineResult(expected=total_events * options.fanout)
    ingest = Ingest()
    await receiver_handle.ask_async("reset", options.fail_rate)

    with tempfile.TemporaryDirectory(prefix="hookline-load-") as tmp:
        server = ServerProcess(Path(tmp), options)
        progress(f"server: pid {server.process.pid}, port {server.port}, workdir {tmp}")
        try:
            await drive_server(receiver_handle, server, total_events, options, ingest, deadline)
        except LoadTestError as exc:
            result.incomplete_reason = str(exc)
        finally:
            # Read the peak before SIGTERM: once the process is gone, /proc forgets it.
            result.peak_rss_mb, result.server_processes = server.peak_rss_mb()
            stop_started = time.monotonic()
            result.server_exit_code = await server.stop()
            result.server_stop_seconds = time.monotonic() - stop_started
            # Whatever went wrong, the server's own words are the first thing to read.
            if result.server_exit_code != 0 or result.incomplete_reason:
                progress(
                    f"server {server.describe_exit(result.server_exit_code)}; "
                    f"its stderr ends with:\n{server.stderr_tail()}"
                )

    report = await receiver_handle.ask_async("report")
    measure_deliveries(result, ingest, report, options.fanout)
    return result


async def drive_server(
    receiver_handle: ReceiverHandle,
    server: ServerProcess,
    total_events: int,
    options: argparse.Namespace,
    ingest: Ingest,
    deadline: Deadline,
) -> None:
    """Register endpoints, ingest every event, and wait for the deliveries to arrive."""
    connections = RATE_MODE_MAX_CONNECTIONS if options.rate else options.ingest_tasks * 2
    connector = aiohttp.TCPConnector(limit=connections)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS)

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await server.wait_healthy(session, deadline)
        await register_endpoints(session, server, receiver_handle.port, options.fanout)
        progress(f"registered {options.fanout} endpoint(s); sending {total_events} events")

        if options.rate:
            sending = ingest_at_rate(session, server, total_events, options.rate, ingest, deadline)
        else:
            sending = ingest_in_batches(session, server, total_events, options, ingest, deadline)
        ingest_task = asyncio.ensure_future(sending)
        try:
            reason = await wait_for_deliveries(
                receiver_handle, server, total_events * options.fanout, ingest_task, deadline
            )
        finally:
            ingest_task.cancel()
            await asyncio.gather(ingest_task, return_exceptions=True)

    failure = None if ingest_task.cancelled() else ingest_task.exception()
    if isinstance(failure, LoadTestError):
        raise failure
    if failure is not None:
        raise LoadTestError(f"Ingest stopped on an unexpected error: {failure!r}") from failure
    if reason is not None:
        raise LoadTestError(f"The run stopped early: {reason}.")


async def wait_for_deliveries(
    receiver_handle: ReceiverHandle,
    server: ServerProcess,
    expected: int,
    ingest_task: asyncio.Future[None],
    deadline: Deadline,
) -> str | None:
    """Wait until ``expected`` deliveries arrived; return why it stopped early, or None."""
    last_count = -1
    last_change = time.monotonic()
    next_print = last_change + PROGRESS_PRINT_SECONDS
    while True:
        summary = await receiver_handle.ask_async("summary")
        delivered = summary["delivered"]
        now = time.monotonic()
        if delivered != last_count:
            last_count, last_change = delivered, now
        if now >= next_print:
            progress(f"  {delivered}/{expected} delivered, {summary['requests']} requests seen")
            next_print = now + PROGRESS_PRINT_SECONDS

        ingest_over = ingest_task.done()
        if ingest_over and not ingest_task.cancelled() and ingest_task.exception():
            return "ingest failed"
        if ingest_over and delivered >= expected:
            return None
        if server.exited():
            return f"the server exited with code {server.process.returncode} during the run"
        if deadline.expired():
            return deadline.reason
        if ingest_over and now - last_change > STALL_SECONDS:
            return f"no delivery arrived for {STALL_SECONDS:.0f} s"
        await asyncio.sleep(PROGRESS_POLL_SECONDS)


def measure_deliveries(
    result: HooklineResult, ingest: Ingest, report: dict[str, Any], fanout: int
) -> None:
    """Join the receiver's receipts with the client's 202 times into the headline figures."""
    first_ok: dict[tuple[str, str], float] = report["first_ok"]
    receipts = hook_receipts(first_ok)
    latencies, result.unmatched = delivery_latencies(first_ok, ingest.accepted_at)
    percentiles = latency_percentiles_ms(latencies)
    result.p50_ms = percentiles["p50_ms"]
    result.p95_ms = percentiles["p95_ms"]
    result.p99_ms = percentiles["p99_ms"]

    result.delivered = len(receipts)
    result.duplicates = report["duplicates"]
    result.failed_first_attempts = report["failed_first_attempts"]
    result.events_accepted = ingest.events_accepted
    result.deliveries_reported = ingest.deliveries_reported
    result.throttled = ingest.throttled
    result.max_send_lag_ms = ingest.max_send_lag_s * 1000

    if ingest.first_send_at is not None:
        if receipts:
            result.per_s = per_second(len(receipts), max(receipts) - ingest.first_send_at)
        if ingest.last_accept_at is not None:
            result.ingest_per_s = per_second(
                ingest.events_accepted, ingest.last_accept_at - ingest.first_send_at
            )

    if ingest.deliveries_reported != ingest.events_accepted * fanout:
        progress(
            f"warning: the server reported {ingest.deliveries_reported} deliveries for "
            f"{ingest.events_accepted} events at fan-out {fanout}"
        )
    if result.unmatched:
        progress(
            f"warning: {result.unmatched} receipts carried a webhook-id that matches no "
            "accepted event or delivery, so they have no latency"
        )


def describe_hookline(result: HooklineResult) -> str:
    return (
        f"hookline: {result.events_accepted} events accepted ({result.throttled} resent "
        f"after 503), {result.delivered}/{result.expected} deliveries received, "
        f"{result.failed_first_attempts} first attempts failed on purpose, "
        f"{result.server_processes} server process(es), "
        f"stopped in {shown(result.server_stop_seconds, ' s', digits=2)}, "
        f"max send lag {shown(result.max_send_lag_ms, ' ms')}"
    )


# --- the run ----------------------------------------------------------------------------------


def build_report(
    options: argparse.Namespace,
    receiver_core: int,
    ceiling: CeilingResult | None,
    hookline: HooklineResult | None,
    problems: list[str],
) -> dict[str, Any]:
    """The results as one flat dict, with the details of each phase nested below."""
    if hookline and hookline.incomplete_reason:
        problems = [*problems, hookline.incomplete_reason]
    ceiling_per_s = ceiling.per_s if ceiling else None
    hookline_per_s = hookline.per_s if hookline else None
    return {
        "ceiling_per_s": ceiling_per_s,
        "hookline_per_s": hookline_per_s,
        "ratio": ratio_of(hookline_per_s, ceiling_per_s),
        "ingest_per_s": hookline.ingest_per_s if hookline else None,
        "p50_ms": hookline.p50_ms if hookline else None,
        "p95_ms": hookline.p95_ms if hookline else None,
        "p99_ms": hookline.p99_ms if hookline else None,
        "peak_rss_mb": hookline.peak_rss_mb if hookline else None,
        "duplicates": hookline.duplicates if hookline else None,
        "deliveries": hookline.delivered if hookline else None,
        "complete": not problems,
        "incomplete_reasons": problems,
        "server_exit_code": hookline.server_exit_code if hookline else None,
        "receiver_core": receiver_core,
        "ceiling": asdict(ceiling) if ceiling else None,
        "hookline": asdict(hookline) if hookline else None,
        "settings": settings_of(options),
    }


def stop_on_signals(deadline: Deadline) -> None:
    """Make Ctrl-C or SIGTERM end the run early but in order: server stopped, figures reported.

    A second signal cancels the run outright, for when the orderly stop itself hangs.
    """
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()
    assert main_task is not None

    def on_signal(signum: signal.Signals) -> None:
        if deadline.expired():
            main_task.cancel()
            return
        progress(f"{signum.name} received: stopping the run and reporting what was measured")
        deadline.cut_short(f"interrupted by {signum.name}")

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)


async def run_phases(
    options: argparse.Namespace, receiver_handle: ReceiverHandle, deadline: Deadline
) -> dict[str, Any]:
    """Run the phases that were asked for, in order, within the deadline."""
    problems: list[str] = []
    ceiling = None
    hookline = None
    stop_on_signals(deadline)

    if not options.skip_ceiling:
        ceiling = await run_ceiling(receiver_handle, options, deadline)
        progress(describe_ceiling(ceiling, options.concurrency))
        if ceiling.answered_ok < ceiling.sent or ceiling.received < ceiling.answered_ok:
            problems.append("some ceiling requests were not answered 200 or not recorded")
        if ceiling.cut_short_by and deadline.expired():
            problems.append(f"the ceiling phase was cut short: {deadline.reason}")

    if not options.skip_hookline:
        if deadline.expired():
            problems.append(f"the hookline phase did not start: {deadline.reason}")
        else:
            hookline = await run_hookline(receiver_handle, options, deadline)
            progress(describe_hookline(hookline))

    return build_report(options, receiver_handle.core, ceiling, hookline, problems)


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_options(argv)
    deadline = Deadline(options.timeout)
    try:
        receiver_handle = ReceiverHandle(choose_receiver_core(options.receiver_core), 0.0)
    except LoadTestError as exc:
        progress(f"error: {exc}")
        return EXIT_ERROR
    progress(
        f"receiver: pid {receiver_handle.process.pid}, port {receiver_handle.port}, "
        f"pinned to CPU {receiver_handle.core} of {sorted(os.sched_getaffinity(0))}"
    )

    # uvloop for the client side too, so the load generator is not what gets measured.
    receiver.install_fast_loop()
    try:
        report = asyncio.run(run_phases(options, receiver_handle, deadline))
    except LoadTestError as exc:
        progress(f"error: {exc}")
        return EXIT_ERROR
    except (KeyboardInterrupt, asyncio.CancelledError):
        progress("interrupted twice: stopped without a report")
        return EXIT_ERROR
    finally:
        receiver_handle.stop()

    for reason in report["incomplete_reasons"]:
        progress(f"incomplete: {reason}")
    print(summary_line(report), flush=True)
    if options.json:
        Path(options.json).write_text(json.dumps(report, indent=2) + "\n")
    server_ok = report["hookline"] is None or report["server_exit_code"] == 0
    return EXIT_COMPLETE if report["complete"] and server_ok else EXIT_INCOMPLETE


if __name__ == "__main__":
    sys.exit(main())
