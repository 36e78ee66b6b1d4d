"""The HTTP API (FastAPI): endpoints, events, deliveries, the DLQ, health and statistics."""
