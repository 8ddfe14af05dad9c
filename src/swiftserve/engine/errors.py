"""Errors that engines raise to their callers (the server maps them to HTTP statuses)."""

from __future__ import annotations


class RequestFailedError(RuntimeError):
    """This request failed inside an engine step (say, its sampling raised); the other requests in
    that step went on. A server error (HTTP 500), not the client's."""


class QueueFullError(RuntimeError):
    """The engine already holds its maximum number of waiting requests; retry later (HTTP 429/503)."""
