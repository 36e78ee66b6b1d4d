"""Being a good citizen towards receivers: rate limits and circuit breakers.

Both are pure functions of stored state and the time, so each store can apply them inside the
transaction that claims deliveries or records results, and every instance sharing a database
sees the same buckets and circuits.
"""
