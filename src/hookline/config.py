"""Settings: environment variables first, then ``config/*.yaml``, then defaults.

Every key in the YAML files is the lower-case name of an environment variable (``retry.yaml``
also holds ``event_retry_policies``), so one name means one setting wherever it is written.
A bad value stops startup with one line naming the setting and what it accepts.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from hookline.errors import ConfigError
from hookline.protection.breaker import BreakerPolicy
from hookline.retry import EventRetryPolicy, RetryPolicies, RetryPolicy, policy_from_mapping
from hookline.store.base import ClaimRules, HealthRules

CONFIG_FILES = ("webhooks.yaml", "retry.yaml", "queue.yaml")
POSTGRES_SCHEMES = ("postgresql://", "postgres://")
SECONDS_PER_DAY = 86_400
KIB = 1024
MIB = 1024 * KIB

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class Settings(BaseSettings):
    """Everything an operator can set; each field's description says what it accepts."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="forbid")

    host: str = Field("0.0.0.0", description="an address to listen on")
    port: int = Field(8000, ge=1, le=65535, description="an integer from 1 to 65535")
    database_url: str = Field(
        "sqlite:///data/hookline.db",
        description=(
            "sqlite:///relative/path.db, sqlite:////absolute/path.db, "
            "or postgresql://user:password@host:5432/database"
        ),
    )
    database_pool_min_size: int = Field(
        2, ge=0, le=1_000, description="PostgreSQL connections kept open, 0 to 1000"
    )
    database_pool_max_size: int = Field(
        10, ge=1, le=1_000, description="most PostgreSQL connections at once, 1 to 1000"
    )
    hookline_data_dir: str | None = Field(
        None,
        description="a directory for local state (default: the SQLite file's directory, or "
        "./data with PostgreSQL)",
    )
    hookline_config_dir: str = Field("config", description="the directory of the YAML files")
    api_keys: str = Field("", description="comma-separated API keys")

    webhook_worker_count: int = Field(
        50, ge=1, le=10_000, description="deliveries in flight at once, 1 to 10000"
    )
    webhook_sender_processes: int | None = Field(
        None,
        ge=0,
        le=64,
        description="child processes that make the HTTP requests, 0 to 64, 0 to send from the "
        "main process (default: 1, started once the attempt rate calls for it, when hookline "
        "may use two or more CPUs; else 0)",
    )
    webhook_max_queue_size: int = Field(
        10_000, ge=0, description="pending deliveries before ingestion answers 503; 0 = no limit"
    )
    webhook_endpoint_concurrency: int = Field(
        10,
        ge=1,
        le=1_000,
        description="attempts in flight to one endpoint unless it sets max_in_flight, 1 to 1000",
    )
    webhook_default_timeout: float = Field(
        30.0, gt=0, le=300, description="seconds, more than 0 and at most 300"
    )
    webhook_lease_margin_seconds: float = Field(
        30.0, ge=1, le=3600, description="seconds from 1 to 3600"
    )
    webhook_global_rate_limit: float | None = Field(
        None, gt=0, description="attempts per second across all endpoints, more than 0"
    )
    webhook_global_rate_burst: float | None = Field(
        None, ge=1, description="tokens, 1 or more (default: a tenth of the rate)"
    )
    circuit_breaker_failure_threshold: int = Field(
        5, ge=1, le=1_000, description="consecutive failed attempts, 1 to 1000"
    )
    circuit_breaker_cooldown_seconds: float = Field(
        30.0, gt=0, le=86_400, description="seconds, more than 0 and at most 86400"
    )
    endpoint_disable_after_days: float = Field(
        5.0, ge=0, description="days of nothing but failures, 0 to never disable"
    )
    webhook_allowed_networks: str = Field(
        "", description="comma-separated CIDRs such as 127.0.0.0/8,::1/128"
    )
    webhook_https_only: bool = Field(False, description="true or false")

    retry_initial_delay: float = Field(1.0, ge=0, description="seconds, 0 or more")
    retry_max_delay: float = Field(300.0, ge=0, description="seconds, 0 or more")
    retry_multiplier: float = Field(2.0, ge=1, description="a number, 1.0 or more")
    retry_jitter: float = Field(0.25, ge=0, lt=1, description="a fraction from 0 to below 1")
    retry_max_attempts: int = Field(5, ge=1, le=100, description="an integer from 1 to 100")
    event_retry_policies: dict[str, Any] = Field(
        default_factory=dict, description="named policies, see config/retry.yaml"
    )

    dlq_retention_days: float = Field(7.0, gt=0, description="days, more than 0")
    idempotency_retention_hours: float = Field(24.0, gt=0, description="hours, more than 0")
    stream_retention_hours: float = Field(
        72.0, gt=0, description="hours the delivery change feed is kept, more than 0"
    )
    max_payload_bytes: int = Field(
        256 * KIB, ge=KIB, description="bytes per request body, 1024 or more"
    )
    max_batch_bytes: int = Field(
        5 * MIB, ge=KIB, description="bytes per batch request body, 1024 or more"
    )
    max_batch_events: int = Field(1000, ge=1, le=10_000, description="1 to 10000")
    sqlite_synchronous: Literal["full", "normal"] = Field(
        "full", description="full (survives power loss) or normal (survives process crashes)"
    )
    shutdown_grace_seconds: float = Field(10.0, ge=0, le=600, description="seconds from 0 to 600")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="DEBUG, INFO, WARNING or ERROR"
    )
    log_format: Literal["auto", "json", "console"] = Field(
        "auto", description="auto (JSON unless on a terminal), json or console"
    )
    # Opt-in because it adds a series per endpoint to the per-attempt metrics.
    metrics_per_endpoint: bool = Field(False, description="true or false")

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("log_format", "sqlite_synchronous", mode="before")
    @classmethod
    def _lower_choice(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("webhook_allowed_networks")
    @classmethod
    def _valid_networks(cls, value: str) -> str:
        parse_networks(value)
        return value

    @field_validator("database_url")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        if not value.startswith(("sqlite:///", *POSTGRES_SCHEMES)):
            raise ValueError("the URL must start with sqlite:///, postgresql:// or postgres://")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        yaml_files = YamlFilesSource(settings_cls, init_settings, env_settings)
        return (init_settings, env_settings, yaml_files)

    # Derived values, computed here so the rest of the code never re-parses a setting.

    @property
    def api_key_list(self) -> list[str]:
        return [key.strip() for key in self.api_keys.split(",") if key.strip()]

    @property
    def allowed_networks(self) -> tuple[IPNetwork, ...]:
        return parse_networks(self.webhook_allowed_networks)

    @property
    def uses_postgres(self) -> bool:
        return self.database_url.startswith(POSTGRES_SCHEMES)

    @property
    def sqlite_path(self) -> Path:
        return Path(self.database_url.removeprefix("sqlite:///"))

    @property
    def data_dir(self) -> Path:
        if self.hookline_data_dir:
            return Path(self.hookline_data_dir)
        if self.uses_postgres:
            return Path("data")
        return self.sqlite_path.parent

    @property
    def sender_processes(self) -> int:
        if self.webhook_sender_processes is not None:
            return self.webhook_sender_processes
        # A second process only pays off when it gets a core of its own.
        return 1 if _usable_cpus() >= 2 else 0

    @property
    def sender_processes_on_demand(self) -> bool:
        """Left to the default, the sending process starts only when the load calls for it."""
        return self.webhook_sender_processes is None and self.sender_processes > 0

    def claim_rules(self) -> ClaimRules:
        return ClaimRules(
            max_in_flight=self.webhook_endpoint_concurrency,
            claim_ahead=self.webhook_endpoint_concurrency,
            lease_margin_seconds=self.webhook_lease_margin_seconds,
            global_rate_limit=self.webhook_global_rate_limit,
            global_rate_burst=self.webhook_global_rate_burst,
        )

    def health_rules(self) -> HealthRules:
        days = self.endpoint_disable_after_days
        return HealthRules(
            breaker=BreakerPolicy(
                self.circuit_breaker_failure_threshold, self.circuit_breaker_cooldown_seconds
            ),
            disable_after_seconds=days * SECONDS_PER_DAY if days else None,
            dead_letter_seconds=self.dlq_retention_days * SECONDS_PER_DAY,
        )

    def retry_policies(self) -> RetryPolicies:
        default = RetryPolicy(
            initial_delay=self.retry_initial_delay,
            multiplier=self.retry_multiplier,
            max_delay=self.retry_max_delay,
            jitter=self.retry_jitter,
            max_attempts=self.retry_max_attempts,
        )
        by_event = [
            _event_policy(name, spec, default) for name, spec in self.event_retry_policies.items()
        ]
        return RetryPolicies(default, by_event)


def parse_networks(value: str) -> tuple[IPNetwork, ...]:
    """Parse a comma-separated list of CIDRs, raising ValueError naming the bad one."""
    networks = []
    for part in value.split(","):
        if not part.strip():
            continue
        try:
            networks.append(ipaddress.ip_network(part.strip(), strict=False))
        except ValueError as exc:
            raise ValueError(f"{part.strip()!r} is not a network in CIDR form") from exc
    return tuple(networks)


def _event_policy(name: str, spec: Any, default: RetryPolicy) -> EventRetryPolicy:
    if not isinstance(spec, dict) or not isinstance(spec.get("events"), list):
        raise ValueError(f"policy {name!r} needs an 'events' list and a 'retry_policy' mapping")
    values = spec.get("retry_policy") or {}
    if not isinstance(values, dict):
        raise ValueError(f"policy {name!r}: retry_policy must be a mapping")
    try:
        policy = policy_from_mapping(values, default)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"policy {name!r}: {exc}") from exc
    return EventRetryPolicy(name, [str(e) for e in spec["events"]], policy)


class YamlFilesSource(PydanticBaseSettingsSource):
    """Reads ``webhooks.yaml``, ``retry.yaml`` and ``queue.yaml`` from the config directory."""

    def __init__(
        self,
        settings_cls: type[BaseSettings],
        *earlier_sources: PydanticBaseSettingsSource,
    ) -> None:
        super().__init__(settings_cls)
        # The config directory itself comes from the sources that outrank the files.
        found = [source().get("hookline_config_dir") for source in earlier_sources]
        self._config_dir = Path(next((d for d in found if d), "config"))

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name in CONFIG_FILES:
            path = self._config_dir / name
            if path.is_file():
                values.update(self._read(path))
        return values

    def _read(self, path: Path) -> dict[str, Any]:
        try:
            content = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{path}: cannot be read as YAML: {exc}") from exc
        if not isinstance(content, dict):
            raise ConfigError(f"{path}: expected a mapping of setting names to values.")
        known = set(self.settings_cls.model_fields)
        for key in content:
            if str(key).lower() not in known:
                raise ConfigError(
                    f"{path}: unknown setting {key!r}; keys are lower-case environment variable "
                    "names such as webhook_worker_count (see the README's configuration table)."
                )
        return {str(key).lower(): value for key, value in content.items()}


def load_settings(**overrides: Any) -> Settings:
    """Build the settings, raising :class:`ConfigError` with one line per bad value."""
    try:
        settings = Settings(**overrides)
        settings.retry_policies()
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from exc
    except ValueError as exc:
        raise ConfigError(f"Invalid setting EVENT_RETRY_POLICIES: {exc}.") from exc
    if settings.database_pool_min_size > settings.database_pool_max_size:
        raise ConfigError(
            f"Invalid setting DATABASE_POOL_MIN_SIZE={settings.database_pool_min_size}: "
            f"must not be larger than DATABASE_POOL_MAX_SIZE={settings.database_pool_max_size}."
        )
    if settings.retry_initial_delay > settings.retry_max_delay:
        raise ConfigError(
            f"Invalid setting RETRY_INITIAL_DELAY={settings.retry_initial_delay}: "
            f"must not be larger than RETRY_MAX_DELAY={settings.retry_max_delay}."
        )
    return settings


def _describe(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        name = ".".join(str(part) for part in error["loc"]) or "settings"
        field = Settings.model_fields.get(name)
        allowed = f" Allowed: {field.description}." if field and field.description else ""
        value = error.get("input")
        shown = f"={value!r}" if isinstance(value, str | int | float | bool) else ""
        reason = error["msg"].removeprefix("Value error, ")
        lines.append(f"Invalid setting {name.upper()}{shown}: {reason}.{allowed}")
    return " ".join(lines)


def _usable_cpus() -> int:
    """CPUs this process may run on (its affinity where the OS has one, as on Linux)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
