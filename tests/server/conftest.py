"""Server test fixtures: an in-thread uvicorn serving an App over fake engines."""

from __future__ import annotations

import pytest

from .thread_server import ThreadServer, make_app


@pytest.fixture(scope="module")
def fake_server():
    app, chat = make_app(max_waiting=2)
    with ThreadServer(app) as server:
        server.chat = chat
        yield server
