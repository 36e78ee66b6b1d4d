"""Benchmark of hookline's endpoint protection on the real server: rate limits and isolation.

Each scenario runs ``python -m hookline serve`` on a throwaway SQLite database and reads what
arrives at local receivers:

* **rate**: one endpoint with ``rate_limit`` R gets a backlog far larger than R allows. Its
  receiver's arrival times give the delivery rate over a window that opens one second after the
  first arrival, since the bucket starts full and the first second holds its burst. The rate
  passes when it is within 5 % of R.
* **isolation**: a fast endpoint's throughput on its own, then, on a fresh server, beside an
  endpoint whose receiver answers only after ``--slow-seconds``. Both endpoints get the same
  ``max_in_flight``. Isolation passes when the fast endpoint keeps at least 90 % of its
  throughput.

The receiver, the server process and ingestion come from the load test next to this file.
Every wait is bounded by a count and by ``--timeout``, and all traffic stays on 127.0.0.1.
See README.md here.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import multiprocessing
import os
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import receiver
import slow_receiver
from hookline_server import (
    LOCALHOST,
    Deadline,
    Ingest,
    LoadTestError,
    ServerProcess,
    accepted_events,
    post_until_accepted,
    webhook_payload,
)
from load_stats import per_second, ratio_of
from protection_stats import (
    FastRun,
    RateRun,
    describe_fast_run,
    describe_rate_run,
    isolation_line,
    rate_line,
    summarize_isolation,
    summarize_rate,
    window_rates,
)
from webhook_load_test import (
    ReceiverHandle,
    choose_receiver_core,
    parse_server_env,
    progress,
    stop_on_signals,
)

SCENARIOS = ("rate", "isolation")

RATE_EVENT = "protection.limited"
FAST_EVENT = "protection.fast"
SLOW_EVENT = "protection.slow"
RATE_PATH = "/hook/limited"
FAST_PATH = "/hook/fast"
SLOW_PATH = "/hook/slow"

BURST_SECONDS = 1.0
"""Left out at the start of the rate window: a full bucket lets a burst through first."""
BACKLOG_SPARE_SECONDS = 10.0
"""Events beyond what the rate allows until the window closes, so the queue never runs dry."""
WINDOW_SETTLE_SECONDS = 0.5
SLOW_TIMEOUT_MARGIN_SECONDS = 10.0
"""The slow endpoint's timeout exceeds its receiver's delay by this, so no attempt times out."""
MAX_ENDPOINT_TIMEOUT_SECONDS = 300.0
SLOW_PHASE_GRACE_SECONDS = "1"
"""SHUTDOWN_GRACE_SECONDS for a server with slow requests in flight, which it would wait for."""

BATCH_EVENTS = 100
INGEST_TASKS = 4
REQUEST_TIMEOUT_SECONDS = 30.0
FIRST_ARRIVAL_SECONDS = 30.0
ARRIVALS_WAIT_SECONDS = 180.0
STALL_SECONDS = 30.0
"""Give up on a phase once no delivery has arrived for this long."""
POLL_SECONDS = 0.2
PROGRESS_EVERY_SECONDS = 5.0

EXIT_ALL_PASSED = 0
EXIT_FAILED = 1
EXIT_ERROR = 2


# --- options ---------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Measure hookline's per-endpoint rate limit and its isolation of a slow "
        "endpoint, on the real server.",
    )
    add = parser.add_argument
    add("--scenario", choices=[*SCENARIOS, "all"], default="all", help="what to measure")
    add("--rate", type=float, default=100.0, help="rate_limit of the limited endpoint, per s")
    add("--seconds", type=float, default=20.0, help="length of the rate window, in seconds")
    add("--events", type=int, default=3000, help="events for the fast endpoint (isolation)")
    add("--slow-events", type=int, default=200, help="events for the slow endpoint")
    add("--slow-seconds", type=float, default=10.0, help="how long the slow receiver waits")
    add("--max-in-flight", type=int, default=10, help="max_in_flight of both endpoints")
    add("--repeat", type=int, default=1, help="runs per scenario; figures are their medians")
    add("--timeout", type=float, default=600.0, help="seconds before the whole run stops")
    add("--receiver-core", type=int, default=None, help="CPU for the receivers (default: last)")
    add("--json", default=None, metavar="PATH", help="also write the results here as JSON")
    add(
        "--server-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for every server started (repeatable)",
    )
    return parser


def parse_options(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse and check the command line; exits with a message on a bad value."""
    parser = build_parser()
    options = parser.parse_args(argv)

    problems = []
    if options.rate <= 0 or options.seconds <= 0 or options.slow_seconds <= 0:
        problems.append("--rate, --seconds and --slow-seconds must be positive")
    if min(options.events, options.slow_events, options.max_in_flight, options.repeat) < 1:
        problems.append("--events, --slow-events, --max-in-flight and --repeat must be at least 1")
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

    options.scenarios = SCENARIOS if options.scenario == "all" else (options.scenario,)
    return options


def settings_of(options: argparse.Namespace) -> dict[str, Any]:
    """Every option as used, for the JSON report."""
    hidden = {"server_env_map", "scenarios", "server_env"}
    settings = {k: v for k, v in vars(options).items() if k not in hidden}
    settings["server_env"] = options.server_env_map
    return settings


# --- receivers and servers -------------------------------------------------------------------


class SlowReceiverHandle(ReceiverHandle):
    """The slow receiver's child process, driven over a pipe exactly like the fast one."""

    def __init__(self, core: int, delay_seconds: float) -> None:
        # ReceiverHandle's constructor would start receiver.py's child. Only the entry point
        # and its arguments differ, so the pipe protocol and the stop logic are inherited.
        context = multiprocessing.get_context("spawn")
        self.conn, child_conn = context.Pipe()
        self.process = context.Process(
            target=slow_receiver.run_child,
            args=(child_conn, core, delay_seconds),
            name="hookline-slow-receiver",
            daemon=True,
        )
        self.process.start()
        child_conn.close()
        self.lock = threading.Lock()
        self.port, self.core = self.wait_ready()


@dataclass(slots=True)
class ServerStop:
    """How the server of one phase ended after SIGTERM."""

    exit_code: int | None = None
    seconds: float | None = None


@contextlib.asynccontextmanager
async def running_server(
    phase_env: dict[str, str],
    options: argparse.Namespace,
    deadline: Deadline,
    stop: ServerStop,
) -> AsyncIterator[tuple[ServerProcess, aiohttp.ClientSession]]:
    """A fresh healthy server and a client session for it; SIGTERM when the block ends."""
    # Options given on the command line win over what a phase would choose itself.
    server_options = argparse.Namespace(
        database_url=None, server_env_map={**phase_env, **options.server_env_map}
    )
    with tempfile.TemporaryDirectory(prefix="hookline-protection-") as tmp:
        server = ServerProcess(Path(tmp), server_options)
        connector = aiohttp.TCPConnector(limit=INGEST_TASKS * 2)
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS)
        try:
            async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
                await server.wait_healthy(session, deadline)
                yield server, session
        finally:
            started = time.monotonic()
            stop.exit_code = await server.stop()
            stop.seconds = time.monotonic() - started
            if stop.exit_code != 0:
                progress(
                    f"server {server.describe_exit(stop.exit_code)}; "
                    f"its stderr ends with:\n{server.stderr_tail()}"
                )


async def register_endpoint(
    session: aiohttp.ClientSession,
    server: ServerProcess,
    url: str,
    event_type: str,
    limits: dict[str, Any],
) -> dict[str, Any]:
    """Create an endpoint for one event type; return it as the server describes it.

    The answer is checked against ``limits``: a limit the server silently dropped would make
    every figure below meaningless.
    """
    spec = {"url": url, "events": [event_type], **limits}
    async with session.post(
        f"{server.base_url}/api/v1/webhooks", json=spec, headers=server.auth
    ) as response:
        text = await response.text()
    if response.status != 201:
        raise LoadTestError(
            f"POST /api/v1/webhooks answered {response.status}, not 201: {text[:500]}"
        )
    endpoint: dict[str, Any] = orjson.loads(text)
    changed = {
        key: endpoint.get(key) for key, value in limits.items() if endpoint.get(key) != value
    }
    if changed:
        raise LoadTestError(f"The endpoint was created with other limits than asked: {changed}.")
    return endpoint


def receiver_url(port: int, path: str) -> str:
    return f"http://{LOCALHOST}:{port}{path}"


def event_batches(event_type: str, count: int) -> list[list[dict[str, Any]]]:
    """``count`` events of one type, cut into batch requests."""
    return [
        [
            {"event_type": event_type, "payload": webhook_payload(seq)}
            for seq in range(start, min(start + BATCH_EVENTS, count))
        ]
        for start in range(0, count, BATCH_EVENTS)
    ]


async def send_batches(
    session: aiohttp.ClientSession,
    server: ServerProcess,
    batches: Sequence[list[dict[str, Any]]],
    ingest: Ingest,
    deadline: Deadline,
) -> None:
    """Send the batches from a few concurrent tasks, in order of starting, as fast as accepted."""
    url = f"{server.base_url}/api/v1/events/batch"
    waiting = iter(batches)

    async def send_from_queue() -> None:
        for events in waiting:
            answer, accepted_at = await post_until_accepted(
                session, url, {"events": events}, server, ingest, deadline
            )
            for event in accepted_events(answer, len(events)):
                ingest.record_accepted(event, accepted_at)

    await asyncio.gather(*(send_from_queue() for _ in range(INGEST_TASKS)))


def arrivals_at(report: dict[str, Any], path: str) -> list[float]:
    """First-receipt times, sorted, of the deliveries that reached one receiver path."""
    first_ok: dict[tuple[str, str], float] = report["first_ok"]
    return sorted(t for (seen_path, _), t in first_ok.items() if seen_path == path)


async def wait_for_arrivals(
    handle: ReceiverHandle, server: ServerProcess, expected: int, deadline: Deadline
) -> str | None:
    """Wait until ``expected`` deliveries reached the receiver; return why not, or None."""
    started = time.monotonic()
    last_count, last_change = -1, started
    next_print = started + PROGRESS_EVERY_SECONDS
    while True:
        delivered = (await handle.ask_async("summary"))["delivered"]
        now = time.monotonic()
        if delivered != last_count:
            last_count, last_change = delivered, now
        if now >= next_print:
            progress(f"    {delivered}/{expected} delivered")
            next_print = now + PROGRESS_EVERY_SECONDS

        if delivered >= expected:
            return None
        if server.exited():
            return f"the server exited with code {server.process.returncode} during the run"
        if deadline.expired():
            return deadline.reason
        if now - last_change > STALL_SECONDS:
            return f"no delivery arrived for {STALL_SECONDS:.0f} s ({delivered}/{expected})"
        if now - started > ARRIVALS_WAIT_SECONDS:
            return f"only {delivered}/{expected} arrived within {ARRIVALS_WAIT_SECONDS:.0f} s"
        await asyncio.sleep(POLL_SECONDS)


async def sleep_until(moment: float, server: ServerProcess, deadline: Deadline) -> str | None:
    """Sleep until ``time.monotonic()`` reaches ``moment``; return why it stopped early, or None."""
    while time.monotonic() < moment:
        if server.exited():
            return f"the server exited with code {server.process.returncode} during the run"
        if deadline.expired():
            return deadline.reason
        await asyncio.sleep(min(POLL_SECONDS, max(moment - time.monotonic(), 0.0)))
    return None


# --- rate ------------------------------------------------------------------------------------


def rate_backlog(options: argparse.Namespace) -> int:
    """Events enough to keep the limited endpoint busy well past the window's end."""
    busy_seconds: float = BURST_SECONDS + options.seconds + BACKLOG_SPARE_SECONDS
    rate: float = options.rate
    return math.ceil(rate * busy_seconds)


async def wait_for_first_arrival(
    handle: ReceiverHandle, server: ServerProcess, deadline: Deadline
) -> float:
    """Wait for the first delivery; return when it was noticed (monotonic, a little late)."""
    give_up_at = time.monotonic() + FIRST_ARRIVAL_SECONDS
    while time.monotonic() < give_up_at:
        if (await handle.ask_async("summary"))["delivered"] > 0:
            return time.monotonic()
        if server.exited() or deadline.expired():
            break
        await asyncio.sleep(POLL_SECONDS)
    raise LoadTestError("No delivery reached the rate-limited endpoint's receiver in time.")


async def drive_rate_run(
    fast: ReceiverHandle,
    options: argparse.Namespace,
    deadline: Deadline,
    run: RateRun,
) -> None:
    """Hand the limited endpoint its backlog and keep the server up until the window closed."""
    async with running_server({}, options, deadline, stop := ServerStop()) as (server, session):
        limits = {"rate_limit": options.rate, "max_in_flight": options.max_in_flight}
        url = receiver_url(fast.port, RATE_PATH)
        endpoint = await register_endpoint(session, server, url, RATE_EVENT, limits)
        run.burst = endpoint.get("rate_limit_burst")

        ingest = Ingest()
        backlog = event_batches(RATE_EVENT, rate_backlog(options))
        await send_batches(session, server, backlog, ingest, deadline)
        run.events_accepted = ingest.events_accepted

        # The first arrival is noticed a poll late, so the true window has closed by then.
        noticed = await wait_for_first_arrival(fast, server, deadline)
        closes = noticed + BURST_SECONDS + options.seconds + WINDOW_SETTLE_SECONDS
        run.problem = await sleep_until(closes, server, deadline)
    run.server_exit_code, run.server_stop_seconds = stop.exit_code, stop.seconds


def read_rate_run(run: RateRun, report: dict[str, Any], options: argparse.Namespace) -> None:
    """Fill in the run's figures from the receiver's arrival times."""
    run.duplicates = report["duplicates"]
    rates = window_rates(arrivals_at(report, RATE_PATH), BURST_SECONDS, options.seconds)
    if rates is None:
        run.problem = run.problem or "nothing arrived"
        return
    run.window_per_s = rates.window_per_s
    run.ratio = ratio_of(rates.window_per_s, options.rate)
    run.with_first_second_per_s = rates.with_burst_per_s
    run.first_second = rates.burst_count
    run.per_second = rates.per_second
    # Had the queue run dry, the window would show the backlog's size, not the limit.
    if rates.through_window >= run.events_accepted:
        run.problem = run.problem or "the backlog ran out before the window closed"


async def measure_rate(
    fast: ReceiverHandle, options: argparse.Namespace, deadline: Deadline
) -> RateRun:
    """One run of the rate scenario on a fresh server."""
    run = RateRun(limit_per_s=options.rate)
    await fast.ask_async("reset", 0.0)
    try:
        await drive_rate_run(fast, options, deadline, run)
    except LoadTestError as exc:
        run.problem = str(exc)
    read_rate_run(run, await fast.ask_async("report"), options)
    return run


# --- isolation -------------------------------------------------------------------------------


def isolation_batches(options: argparse.Namespace, beside_slow: bool) -> list[Any]:
    """The fast endpoint's events, led by the slow endpoint's when it is there.

    Slow events go first so they sit at the head of the queue, where they could block the most.
    """
    fast = event_batches(FAST_EVENT, options.events)
    if not beside_slow:
        return fast
    return event_batches(SLOW_EVENT, options.slow_events) + fast


async def register_isolation_endpoints(
    session: aiohttp.ClientSession,
    server: ServerProcess,
    ports: tuple[int, int | None],
    options: argparse.Namespace,
) -> None:
    """The fast endpoint, and the slow one first when its receiver port is given."""
    fast_port, slow_port = ports
    limits = {"max_in_flight": options.max_in_flight}
    if slow_port is not None:
        patient = min(
            options.slow_seconds + SLOW_TIMEOUT_MARGIN_SECONDS, MAX_ENDPOINT_TIMEOUT_SECONDS
        )
        slow_url = receiver_url(slow_port, SLOW_PATH)
        await register_endpoint(
            session, server, slow_url, SLOW_EVENT, {**limits, "timeout": patient}
        )
    fast_url = receiver_url(fast_port, FAST_PATH)
    await register_endpoint(session, server, fast_url, FAST_EVENT, limits)


async def drive_fast_run(
    fast: ReceiverHandle,
    slow: SlowReceiverHandle | None,
    options: argparse.Namespace,
    deadline: Deadline,
    run: FastRun,
) -> Ingest:
    """Send the events and wait for every fast delivery; return what ingestion saw."""
    phase_env = {"SHUTDOWN_GRACE_SECONDS": SLOW_PHASE_GRACE_SECONDS} if slow else {}
    ingest = Ingest()
    async with running_server(phase_env, options, deadline, stop := ServerStop()) as (
        server,
        session,
    ):
        ports = (fast.port, slow.port if slow else None)
        await register_isolation_endpoints(session, server, ports, options)
        batches = isolation_batches(options, beside_slow=slow is not None)
        await send_batches(session, server, batches, ingest, deadline)
        run.problem = await wait_for_arrivals(fast, server, options.events, deadline)

        if slow is not None:
            # Read while the server still holds its slow requests open.
            run.slow_peak_held = (await slow.ask_async("holding"))["peak"]
            run.slow_arrivals = (await slow.ask_async("summary"))["delivered"]
    run.server_exit_code, run.server_stop_seconds = stop.exit_code, stop.seconds
    return ingest


def read_fast_run(run: FastRun, report: dict[str, Any], ingest: Ingest) -> None:
    """Fill in the fast endpoint's throughput from its receiver's arrival times."""
    arrivals = arrivals_at(report, FAST_PATH)
    run.delivered = len(arrivals)
    if not arrivals:
        run.problem = run.problem or "nothing arrived"
        return
    if ingest.first_send_at is not None:
        run.seconds = arrivals[-1] - ingest.first_send_at
        run.per_s = per_second(len(arrivals), run.seconds)
    # n arrivals bound n - 1 gaps.
    run.arrival_span_per_s = per_second(len(arrivals) - 1, arrivals[-1] - arrivals[0])


async def measure_fast(
    fast: ReceiverHandle,
    slow: SlowReceiverHandle | None,
    options: argparse.Namespace,
    deadline: Deadline,
) -> FastRun:
    """One run of the fast endpoint on a fresh server, beside the slow one when it is given."""
    run = FastRun(beside_slow=slow is not None, expected=options.events)
    await fast.ask_async("reset", 0.0)
    if slow is not None:
        await slow.ask_async("reset", 0.0)
    ingest = Ingest()
    try:
        ingest = await drive_fast_run(fast, slow, options, deadline, run)
    except LoadTestError as exc:
        run.problem = str(exc)
    read_fast_run(run, await fast.ask_async("report"), ingest)
    return run


# --- the run ---------------------------------------------------------------------------------


async def run_scenarios(
    options: argparse.Namespace,
    fast: ReceiverHandle,
    slow: SlowReceiverHandle | None,
    deadline: Deadline,
) -> dict[str, Any]:
    """Every run of every scenario asked for, one repetition after the other."""
    stop_on_signals(deadline)
    rate_runs: list[RateRun] = []
    pairs: list[tuple[FastRun, FastRun]] = []

    for repetition in range(1, options.repeat + 1):
        if deadline.expired():
            progress(f"stopping before run {repetition}: {deadline.reason}")
            break
        progress(f"run {repetition}/{options.repeat}, load average {load_average()}")
        if "rate" in options.scenarios:
            rate_runs.append(await measure_rate(fast, options, deadline))
            progress(describe_rate_run(rate_runs[-1]))
        if "isolation" in options.scenarios and slow is not None:
            alone = await measure_fast(fast, None, options, deadline)
            progress(describe_fast_run(alone))
            beside = await measure_fast(fast, slow, options, deadline)
            progress(describe_fast_run(beside))
            pairs.append((alone, beside))

    report: dict[str, Any] = {}
    if "rate" in options.scenarios:
        report["rate"] = summarize_rate(
            rate_runs, limit_per_s=options.rate, window_seconds=options.seconds
        )
    if "isolation" in options.scenarios:
        report["isolation"] = summarize_isolation(
            pairs,
            max_in_flight=options.max_in_flight,
            slow_seconds=options.slow_seconds,
            fast_events=options.events,
        )
    return report


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def start_receivers(
    options: argparse.Namespace,
) -> tuple[ReceiverHandle, SlowReceiverHandle | None]:
    """The fast receiver, and the slow one when isolation is measured, pinned to one CPU."""
    core = choose_receiver_core(options.receiver_core)
    fast = ReceiverHandle(core, 0.0)
    progress(f"fast receiver: pid {fast.process.pid}, port {fast.port}, CPU {fast.core}")
    if "isolation" not in options.scenarios:
        return fast, None
    try:
        slow = SlowReceiverHandle(core, options.slow_seconds)
    except LoadTestError:
        fast.stop()
        raise
    progress(f"slow receiver: pid {slow.process.pid}, port {slow.port}, CPU {slow.core}")
    return fast, slow


def write_results(options: argparse.Namespace, report: dict[str, Any], loads: list[str]) -> None:
    """One line per scenario on stdout, and the JSON file when asked for."""
    if "rate" in report:
        print(rate_line(report["rate"]), flush=True)
    if "isolation" in report:
        print(isolation_line(report["isolation"]), flush=True)
    for name, summary in report.items():
        for problem in summary["problems"]:
            progress(f"{name}: problem: {problem}")
        for warning in summary.get("warnings", []):
            progress(f"{name}: warning: {warning}")
    if options.json:
        document = {**report, "load_average": loads, "settings": settings_of(options)}
        Path(options.json).write_text(json.dumps(document, indent=2) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_options(argv)
    deadline = Deadline(options.timeout)
    loads = [load_average()]
    progress(f"load average at start: {loads[0]} on {os.cpu_count()} CPUs")
    try:
        fast, slow = start_receivers(options)
    except LoadTestError as exc:
        progress(f"error: {exc}")
        return EXIT_ERROR

    # uvloop on the client side too, so the benchmark's own sending is not what is measured.
    receiver.install_fast_loop()
    try:
        report = asyncio.run(run_scenarios(options, fast, slow, deadline))
    except LoadTestError as exc:
        progress(f"error: {exc}")
        return EXIT_ERROR
    except (KeyboardInterrupt, asyncio.CancelledError):
        progress("interrupted twice: stopped without a report")
        return EXIT_ERROR
    finally:
        fast.stop()
        if slow is not None:
            slow.stop()

    loads.append(load_average())
    progress(f"load average at end: {loads[-1]}")
    write_results(options, report, loads)
    passed = all(summary["passed"] for summary in report.values())
    return EXIT_ALL_PASSED if passed else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
