from __future__ import annotations

import os
from pathlib import Path

import pytest

from hookline.config import load_settings
from hookline.errors import ConfigError


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("PORT", "HOST", "DATABASE_URL", "WEBHOOK_WORKER_COUNT", "RETRY_MAX_DELAY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOOKLINE_CONFIG_DIR", str(tmp_path))


def test_defaults() -> None:
    settings = load_settings()

    assert (settings.host, settings.port) == ("0.0.0.0", 8000)
    assert settings.database_url == "sqlite:///data/hookline.db"
    assert settings.webhook_max_queue_size == 10_000
    assert settings.dlq_retention_days == 7
    assert settings.retry_policies().default.schedule() == [1.0, 2.0, 4.0, 8.0]


def test_environment_wins_over_yaml(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "queue.yaml").write_text("webhook_worker_count: 7\nwebhook_max_queue_size: 5\n")
    monkeypatch.setenv("WEBHOOK_WORKER_COUNT", "9")

    settings = load_settings()

    assert settings.webhook_worker_count == 9
    assert settings.webhook_max_queue_size == 5


def test_retry_yaml_event_policies(tmp_path: Path) -> None:
    (tmp_path / "retry.yaml").write_text(
        "event_retry_policies:\n"
        "  critical:\n"
        '    events: ["payment.success", "payment.failed"]\n'
        "    retry_policy: {initial_delay: 0.5, max_delay: 600.0, max_attempts: 8}\n"
    )

    policy = load_settings().retry_policies().for_event("payment.failed")

    assert (policy.initial_delay, policy.max_delay, policy.max_attempts) == (0.5, 600.0, 8)


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("PORT", "eighty", "PORT='eighty'"),
        ("PORT", "70000", "an integer from 1 to 65535"),
        ("WEBHOOK_WORKER_COUNT", "0", "WEBHOOK_WORKER_COUNT"),
        ("LOG_LEVEL", "LOUD", "DEBUG, INFO, WARNING or ERROR"),
        ("WEBHOOK_ALLOWED_NETWORKS", "10.0.0.0/33", "CIDR"),
        ("DATABASE_URL", "mysql://x", "DATABASE_URL"),
        ("WEBHOOK_HTTPS_ONLY", "maybe", "true or false"),
    ],
)
def test_bad_value_names_the_setting_and_what_is_allowed(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(name, value)

    with pytest.raises(ConfigError, match=expected) as caught:
        load_settings()

    assert "\n" not in str(caught.value)


def test_unknown_yaml_key_is_refused(tmp_path: Path) -> None:
    (tmp_path / "webhooks.yaml").write_text("worker_count: 3\n")

    with pytest.raises(ConfigError, match="unknown setting 'worker_count'"):
        load_settings()


def test_bad_event_policy_is_refused(tmp_path: Path) -> None:
    (tmp_path / "retry.yaml").write_text(
        "event_retry_policies:\n  x:\n    events: [a]\n    retry_policy: {max_attempts: 0}\n"
    )

    with pytest.raises(ConfigError, match="max_attempts"):
        load_settings()


def test_initial_delay_above_max_delay_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RETRY_INITIAL_DELAY", "10")
    monkeypatch.setenv("RETRY_MAX_DELAY", "5")

    with pytest.raises(ConfigError, match="RETRY_INITIAL_DELAY"):
        load_settings()


@pytest.mark.parametrize(("cpus", "expected"), [({0}, 0), ({0, 1}, 1), (set(range(16)), 1)])
def test_one_sending_process_by_default_when_there_is_a_second_cpu(
    monkeypatch: pytest.MonkeyPatch, cpus: set[int], expected: int
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda _: cpus)

    settings = load_settings()
    assert settings.sender_processes == expected
    assert settings.sender_processes_on_demand is (expected > 0)


def test_cpus_are_counted_where_there_is_no_affinity_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delattr(os, "sched_getaffinity")  # macOS has none
    monkeypatch.setattr(os, "cpu_count", lambda: 8)

    assert load_settings().sender_processes == 1


def test_sending_processes_can_be_set_or_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBHOOK_SENDER_PROCESSES", "0")
    assert load_settings().sender_processes == 0

    monkeypatch.setenv("WEBHOOK_SENDER_PROCESSES", "3")
    assert load_settings().sender_processes == 3
    assert not load_settings().sender_processes_on_demand  # set explicitly: started at once

    monkeypatch.setenv("WEBHOOK_SENDER_PROCESSES", "-1")
    with pytest.raises(ConfigError, match="WEBHOOK_SENDER_PROCESSES"):
        load_settings()
