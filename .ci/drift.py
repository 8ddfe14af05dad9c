"""Installed distributions whose versions differ from the lock: prints one line per package
(lock version -> installed version) so that a failure against newer releases names its suspects."""

from __future__ import annotations

import importlib.metadata
import re
import sys
from pathlib import Path

# The installer and the project itself are never in the lock.
UNLOCKED = {"pip", "setuptools", "wheel", "swiftserve"}
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([^\s;]+)")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pinned(lock: Path) -> dict[str, str]:
    pins = {}
    for line in lock.read_text().splitlines():
        if match := PIN.match(line):
            pins[canonical(match[1])] = match[2]
    return pins


def installed() -> dict[str, str]:
    return {canonical(d.metadata["Name"]): d.version for d in importlib.metadata.distributions()}


def main(lock: str) -> int:
    pins, have = pinned(Path(lock)), installed()
    rows = [
        (name, pins[name], have.get(name, "(absent)"))
        for name in sorted(pins)
        if have.get(name, "(absent)").split("+")[0] != pins[name].split("+")[0]
    ]
    rows += [(name, "(not locked)", have[name]) for name in sorted(set(have) - set(pins) - UNLOCKED)]
    print(f"{len(rows)} installed distributions differ from {lock}:" if rows else f"as in {lock}")
    for name, locked, now in rows:
        print(f"  {name:32} {locked:>16} -> {now}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
