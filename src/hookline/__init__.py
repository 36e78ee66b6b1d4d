"""hookline: a webhook delivery service.

Events come in over an HTTP API, fan out to every subscribed endpoint, and are delivered as
signed JSON with retries and exponential backoff; what still fails lands in a dead-letter queue.
"""

from __future__ import annotations

__version__ = "0.1.0"
