"""A real `swiftserve launch` subprocess for server tests: health wait, model states, chat and
embedding calls, RSS and metric readings, SIGTERM stop that must exit 0."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time

import httpx
import psutil
import pytest

CHAT = "smollm2-135m-instruct"
EMBED = "all-minilm-l6-v2"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    def __init__(self, *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "swiftserve.cli", "launch", "--port", str(self.port), *args]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 300
        while not self._healthy():
            if self.process.poll() is not None:
                pytest.fail(f"server exited with {self.process.returncode}:\n{self.process.stdout.read()}")
            assert time.monotonic() < deadline, "server did not become healthy"
            time.sleep(0.2)

    def _healthy(self) -> bool:
        try:
            return httpx.get(self.url + "/health", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def states(self) -> dict[str, str]:
        return {m["id"]: m["state"] for m in httpx.get(self.url + "/v1/models").json()["data"]}

    def wait_state(self, model: str, state: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while self.states()[model] != state:
            assert time.monotonic() < deadline, f"{model} never became {state}: {self.states()}"
            time.sleep(0.1)

    def chat(self, content: str, model: str = CHAT) -> httpx.Response:
        body = {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": 8}
        return httpx.post(self.url + "/v1/chat/completions", json={**body, "temperature": 0}, timeout=300)

    def embed(self, text: str, model: str = EMBED) -> httpx.Response:
        return httpx.post(self.url + "/v1/embeddings", json={"model": model, "input": text}, timeout=300)

    def rss(self) -> int:
        return psutil.Process(self.process.pid).memory_info().rss

    def metric(self, line_start: str) -> float:
        for line in httpx.get(self.url + "/metrics").text.splitlines():
            if line.startswith(line_start):
                return float(line.rsplit(" ", 1)[1])
        raise AssertionError(f"{line_start} missing from /metrics")

    def stop(self) -> str:
        self.process.send_signal(signal.SIGTERM)
        try:
            out, _ = self.process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            pytest.fail("server did not exit within 60 s of SIGTERM")
        assert self.process.returncode == 0, out
        return out
