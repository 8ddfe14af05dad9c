"""An in-thread uvicorn serving an App, and an App over fake engines."""

from __future__ import annotations

import asyncio
import threading
import time

import uvicorn
from swiftserve.router.model_pool import ModelPool
from swiftserve.router.router import Router

from swiftserve.server.app import App

from .server_fakes import FakeChatEngine, FakeEmbeddingEngine, FakeServed


class _Server(uvicorn.Server):
    async def startup(self, sockets=None) -> None:
        self.loop = asyncio.get_running_loop()
        await super().startup(sockets)


class ThreadServer:
    def __init__(self, app: App) -> None:
        self.app = app
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=0,
            loop="uvloop",
            http="httptools",
            log_level="warning",
            lifespan="on",
            timeout_graceful_shutdown=5,
        )
        self.server = _Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ThreadServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("test server did not start")
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def make_app(api_key: str | None = None, **chat_kwargs) -> tuple[App, FakeChatEngine]:
    router = Router(ModelPool(10**9, reap_interval_s=3600))
    chat = FakeChatEngine(**chat_kwargs)
    router.add(FakeServed("fake-chat", "chat", chat), "pinned")
    router.add(FakeServed("fake-embed", "embedding", FakeEmbeddingEngine()), "pinned")
    app = App(router, api_key=api_key, max_body_bytes=1024 * 1024)
    return app, chat
