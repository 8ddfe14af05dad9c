"""The deployments compared: static (one `swiftserve launch` per model, cores split) and the
swiftserve variants (one process, every core, the pipelines in its config); the llama.cpp peer
(llamacpp.py) is static's deployment built from llama.cpp."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from benchmarks.compound.pipelines import CORPUS, FAN_OUTS, GREEDY, pipeline_entries
from benchmarks.compound.server_proc import Proc

SYSTEMS = ("static", "llamacpp", "swiftserve", "swiftserve-noprewarm", "swiftserve-pinned")
# no scale to zero: every model loaded from the start, nothing to wait for before the trace
ALWAYS_LOADED = ("static", "llamacpp", "swiftserve-pinned")


def ignore_eos(model: str, max_tokens: int) -> dict:
    """swiftserve's request fields for a greedy call of exactly max_tokens tokens."""
    return {"max_tokens": max_tokens, **GREEDY}


@dataclass
class System:
    """A deployment: its processes, where each model is served, and how pipelines run."""

    name: str
    procs: list[Proc]
    routes: dict[str, str]  # served model -> base URL
    orchestrated: bool  # True: pipelines run by the client (static); False: by the server
    config_text: str = ""
    # (model, max_tokens) -> the request fields of a greedy call of exactly max_tokens tokens
    fixed_length: Callable[[str, int], dict] = ignore_eos

    def describe(self) -> dict:
        return {
            "processes": [{"name": p.name, "cpus": p.cpus, "cmd": " ".join(p.cmd[3:])} for p in self.procs],
            "pipelines": "client orchestrator" if self.orchestrated else "server (config file)",
            "config": self.config_text,
        }


@dataclass(frozen=True)
class Setup:
    """What every system is built from: model sources, lengths and budgets."""

    sources: dict[str, str]  # served name -> source (alias or snapshot path)
    workdir: Path
    logdir: Path
    cpus: list[int]
    max_model_len: int
    kv_cache_memory: str
    big_step_tokens: int
    idle_timeout: str
    memory_budget: str
    static_budgets: dict[str, str]


def engine_flags(setup: Setup) -> list[str]:
    return ["--max-model-len", str(setup.max_model_len), "--kv-cache-memory", setup.kv_cache_memory]


def static_cpus(cpus: list[int], name: str) -> list[int]:
    """A static deployment's cores for one model: big alone on the upper half, the three small
    models sharing the lower half (one machine of a single core: that core for all)."""
    half = max(1, len(cpus) // 2)
    return (cpus[half:] or cpus[:half]) if name == "big" else cpus[:half]


def static_system(setup: Setup) -> System:
    """One process per model, on its static_cpus, each with a fixed memory budget."""
    procs = []
    for name, source in setup.sources.items():
        cpus = static_cpus(setup.cpus, name)
        args = ["--models", f"{name}={source}", "--memory-budget", setup.static_budgets[name]]
        if name == "big":  # the same step budget as in swiftserve
            args += ["--max-num-batched-tokens", str(setup.big_step_tokens)]
        procs.append(Proc(f"static-{name}", args + engine_flags(setup), cpus, setup.logdir))
    routes = {p.name.removeprefix("static-"): p.base for p in procs}
    return System("static", procs, routes, orchestrated=True)


def swiftserve_config(setup: Setup, prewarm: bool, pinned: bool) -> dict:
    on_demand = {"gemma", "big"}
    models = []
    for name, source in setup.sources.items():
        entry = {"name": name, "source": source, "policy": "pinned"}
        if name in on_demand and not pinned:
            entry["policy"] = "on-demand"
        if name == "big":
            entry["max_num_batched_tokens"] = setup.big_step_tokens
        models.append(entry)
    pipelines = pipeline_entries(CORPUS)
    for p in pipelines:
        p["prewarm"] = prewarm
    return {
        "memory_budget": setup.memory_budget,
        "idle_timeout": setup.idle_timeout,
        "models": models,
        "pipelines": pipelines,
    }


def swiftserve_system(setup: Setup, name: str) -> System:
    config = swiftserve_config(
        setup, prewarm=name != "swiftserve-noprewarm", pinned=name == "swiftserve-pinned"
    )
    if name == "swiftserve-pinned":
        config["memory_budget"] = "8GiB"  # every model resident: a budget that holds them all
    text = yaml.safe_dump(config, sort_keys=False)
    path = setup.workdir / f"{name}.yaml"
    path.write_text(text)
    proc = Proc(name, ["--config", str(path), *engine_flags(setup)], setup.cpus, setup.logdir)
    routes = {m: proc.base for m in [*setup.sources, *(f"rag{n}" for n in FAN_OUTS)]}
    return System(name, [proc], routes, orchestrated=False, config_text=text)


def build_system(setup: Setup, name: str) -> System:
    if name == "llamacpp":
        # imported here: llamacpp.py builds on this module's System and static_cpus
        from benchmarks.compound.llamacpp import llamacpp_system

        return llamacpp_system(setup)
    return static_system(setup) if name == "static" else swiftserve_system(setup, name)
