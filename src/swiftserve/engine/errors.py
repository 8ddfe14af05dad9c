"""Errors that engines raise to their callers (the server maps them to HTTP statuses)."""

from __future__ import annotations


class QueueFullError(RuntimeError):
    """The engine already holds its maximum number of waiting requests; retry later (HTTP 429/503)."""
