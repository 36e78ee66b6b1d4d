"""What a batch of attempt outcomes does to the health of the endpoints they went to.

Pure: the stores load the endpoints' health, call :func:`follow_outcomes`, then write where
each endpoint ended up and disable the ones it names. Only the final state is written; the
states in between would cost a write per outcome and nothing ever reads them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from hookline.models import AttemptVerdict, EndpointChange, EndpointHealth
from hookline.protection import breaker
from hookline.protection.disabling import disable_reason

if TYPE_CHECKING:  # the store's rule types import this package's breaker policy
    from hookline.store.base import HealthRules


@dataclass(frozen=True, slots=True)
class Disabling:
    """An endpoint to disable: why, its URL for the dead letters, and when."""

    reason: str
    url: str
    at: float


@dataclass(slots=True)
class HealthMoves:
    """Where the endpoints ended up, the transitions on the way, and who is disabled."""

    healths: dict[str, EndpointHealth]
    changed: dict[str, EndpointHealth] = field(default_factory=dict)
    """Only the endpoints whose health differs from what was loaded."""
    transitions: list[EndpointChange] = field(default_factory=list)
    disabled: dict[str, Disabling] = field(default_factory=dict)


def follow_outcomes(
    loaded: Mapping[str, EndpointHealth],
    verdicts: Sequence[AttemptVerdict],
    rules: HealthRules,
) -> HealthMoves:
    """Move each endpoint in ``loaded`` through its verdicts' outcomes, in the given order.

    Endpoints missing from ``loaded`` (deleted or disabled while the attempt was in flight)
    keep their health as is, and so does one from the moment it is disabled here.
    """
    moves = HealthMoves(dict(loaded))
    for verdict in verdicts:
        endpoint_id, result = verdict.claim.endpoint_id, verdict.result
        before = moves.healths.get(endpoint_id)
        if before is None or endpoint_id in moves.disabled:
            continue
        now = result.finished_at
        after = breaker.after_attempt(before, result.succeeded, now, rules.breaker)
        if result.retry_after_seconds is not None:
            after = breaker.paused_by_receiver(after, result.retry_after_seconds, now)
        moves.healths[endpoint_id] = after
        if after.circuit is not before.circuit:
            moves.transitions.append(
                EndpointChange(endpoint_id, before.circuit, after.circuit, after.paused_until)
            )
        reason = disable_reason(result.status_code, after, rules.disable_after_seconds, now)
        if reason is not None:
            moves.disabled[endpoint_id] = Disabling(reason, verdict.claim.url, now)
            moves.transitions.append(
                EndpointChange(endpoint_id, after.circuit, after.circuit, disabled_reason=reason)
            )
    moves.changed = {
        endpoint_id: health
        for endpoint_id, health in sorted(moves.healths.items())
        if health != loaded[endpoint_id]
    }
    return moves
