"""One server process of a system: started on its cores with as many OpenMP threads, waited for,
stopped."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from benchmarks.common import stop_process, wait_ready
from benchmarks.multi_model import free_port


@dataclass
class Proc:
    """One `swiftserve launch` subprocess on `cpus` with `threads` OpenMP threads."""

    health: ClassVar[str] = "/health"  # answers 200 once the server serves

    name: str
    args: list[str]
    cpus: list[int]
    logdir: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        """The server's command line (without the taskset prefix)."""
        launch = ["launch", "--host", "127.0.0.1", "--port", str(self.port), *self.args]
        return [sys.executable, "-m", "swiftserve.cli", "-v", *launch]

    def start(self) -> None:
        threads = str(len(self.cpus))
        env = dict(os.environ, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
        # The server runs `python -m` in this working directory (the repository root under
        # `python -m benchmarks.compound`), which -m would put first on its sys.path, where the
        # root's kernels/ shadows the installed `kernels` that transformers imports: it needs
        # only installed packages, so the working directory stays off (as ray_serve.py's workers).
        env["PYTHONSAFEPATH"] = "1"
        cmd = ["taskset", "-c", ",".join(map(str, self.cpus)), *self.command()]
        self.cmd = cmd
        self.log = (self.logdir / f"{self.name}.log").open("w")
        # stdin from /dev/null: a server under a job-controlled shell must never stop on reading a tty
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT, env=env
        )

    def wait_ready(self, timeout: float = 300.0) -> None:
        wait_ready(self.name, self.proc, self.base + self.health, self.logdir / f"{self.name}.log", timeout)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, timeout=30)
        if getattr(self, "log", None):
            self.log.close()
