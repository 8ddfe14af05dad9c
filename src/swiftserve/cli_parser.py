"""The `swiftserve` command's arguments: every subcommand's flags and the types that check them
(the commands themselves are cli.py's)."""

from __future__ import annotations

import argparse

from swiftserve.config import DTYPES
from swiftserve.scheduler.memory_budget import parse_bytes
from swiftserve.server.launch import DEFAULT_MAX_TOKENS, DEFAULT_MODELS

_DEVICES = ("auto", "cpu", "cuda")
DESCRIPTION = """The `swiftserve` command: launch (OpenAI-compatible server), generate (one prompt), pull,
snapshot (one file that loads fast)."""


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _duration(text: str) -> float:
    from swiftserve.router.config_file import ConfigError, parse_duration

    try:
        return parse_duration(text)
    except ConfigError:
        # argparse names the option itself ("argument --idle-timeout: ..."); parse_duration's
        # message names a config key, which here would say it twice.
        raise argparse.ArgumentTypeError(f"expected a duration such as 60s or 5m, got {text!r}") from None


def _bytes(text: str) -> int:
    try:
        value = parse_bytes(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive size, got {text!r}")
    return value


def _add_engine_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dtype",
        choices=DTYPES,
        default="auto",
        help="weights and activations (auto: a snapshot's own dtype, else bfloat16 for chat models and "
        "float32 for embedding models)",
    )
    parser.add_argument(
        "--device", choices=_DEVICES, default="auto", help="auto: cuda when available, else cpu"
    )
    parser.add_argument(
        "--max-model-len",
        type=_positive_int,
        help="prompt + output tokens (default: the model's limit, as far as --kv-cache-memory holds "
        "one sequence of it)",
    )
    parser.add_argument(
        "--kv-cache-memory",
        type=_bytes,
        help="the most KV cache a chat model may hold, e.g. 512MiB (default 512MiB; reserved, "
        "committed as it is used)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="swiftserve", description=DESCRIPTION)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    parser.add_argument(
        "--version", action="store_true", help="print the version and the kernel backends, then exit"
    )
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("doctor", help="what this install can run: version, torch, kernel backends")

    launch = sub.add_parser("launch", help="serve models over the OpenAI API")
    launch.add_argument(
        "--models",
        help="pinned (dedicated) models, loaded at start and never evicted: comma-separated specs, "
        "each an alias, folder, .gguf or .swsnap snapshot, optionally served_name=spec "
        f"(default, with no --on-demand or --config: {','.join(DEFAULT_MODELS)})",
    )
    launch.add_argument(
        "--on-demand",
        help="on-demand (serverless) models, the same specs: loaded on first request, unloaded "
        "after --idle-timeout without requests, evicted when another model needs the memory",
    )
    launch.add_argument(
        "--idle-timeout", type=_duration, default="60s", help="scale on-demand models to zero after this"
    )
    launch.add_argument(
        "--memory-budget",
        type=_bytes,
        help="bytes for every model's weights and KV cache together (default: a share of free RAM "
        "on CPU, of device memory on CUDA); a config that can never fit is refused at start",
    )
    launch.add_argument(
        "--host-memory",
        type=_bytes,
        help="host memory for the weights of unloaded models, so that their reload is one copy "
        "(default: the config file's host_memory, else 0: an unload returns all memory)",
    )
    launch.add_argument(
        "--config", help="a YAML file of models and settings (see README); flags given as well win"
    )
    launch.add_argument("--host", default="127.0.0.1")
    launch.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    launch.add_argument("--api-key", help="require 'Authorization: Bearer KEY' on /v1 routes")
    _add_engine_args(launch)
    launch.add_argument("--max-num-seqs", type=_positive_int, help="most sequences in one batch")
    launch.add_argument("--max-num-batched-tokens", type=_positive_int, help="token budget of one step")
    launch.add_argument(
        "--max-queue",
        type=_non_negative_int,
        help="waiting requests per model before 429 (a model's max_queue in --config wins)",
    )
    launch.add_argument(
        "--request-timeout",
        type=_duration,
        help="end a chat, completion or pipeline request that sets no `timeout` after this long "
        "(504 request_timeout; default: none)",
    )
    launch.add_argument(
        "--chat-lanes",
        type=_positive_int,
        help="chat models stepping side by side, each on its share of the cores (default: 2 on two "
        "cores or more, the heaviest model alone on one; 1 steps one model at a time)",
    )
    launch.add_argument(
        "--parallel-loads",
        type=_positive_int,
        help="model loads at once; the others wait, the oldest request's first and a pipeline's in "
        "order of need (default: no limit, every admitted load starts at once)",
    )
    launch.add_argument(
        "--grammar-compile-timeout",
        type=_duration,
        default="10s",
        help="how long a request waits for its response_format / guided_* constraint to compile "
        "before a 400 (a constraint that timed out is refused at once after that)",
    )
    launch.add_argument(
        "--seed",
        type=int,
        help="seed of every model's sampler for requests that set no seed: each load then repeats "
        "the same random answers (default: fresh entropy on every load; a request's own seed "
        "is reproducible either way)",
    )
    launch.add_argument(
        "--max-body-bytes", type=_bytes, default="8MiB", help="request body limit (413 past it)"
    )
    launch.add_argument(
        "--no-snapshots",
        dest="snapshots",
        action="store_false",
        help="do not write or read automatic snapshots of chat and embedding models in the model cache "
        "(by default the first load of a folder, GGUF or alias writes one there and later loads read it)",
    )
    launch.add_argument(
        "--ray",
        action="store_true",
        help="serve on Ray Serve: replicas of this whole server behind one OpenAI ingress (the "
        "config file's replicas: section; needs swiftserve[ray]; see README)",
    )
    launch.add_argument(
        "--address", help="with --ray: join this Ray cluster (e.g. auto; default: start a local Ray)"
    )
    launch.add_argument("--num-cpus", type=_positive_int, help="with --ray: CPUs of the local Ray it starts")
    launch.add_argument(
        "--num-replicas", type=_positive_int, help="with --ray: replicas (default: the config file's, else 1)"
    )
    launch.add_argument(
        "--ray-proxy",
        choices=("haproxy", "ray"),
        help="with --ray: the HTTP proxy a local Ray starts: HAProxy, one Ray call fewer per request "
        "(default), or Ray Serve's Python proxy; a cluster joined keeps its own",
    )
    launch.add_argument(
        "--default-max-tokens",
        type=_positive_int,
        default=DEFAULT_MAX_TOKENS,
        help="output tokens of a chat completion that sets neither max_tokens nor max_completion_tokens, "
        "capped by what the context leaves (default: %(default)s)",
    )

    generate = sub.add_parser("generate", help="generate from one prompt, streaming to the terminal")
    generate.add_argument("prompt")
    generate.add_argument("--model", default=DEFAULT_MODELS[0])
    generate.add_argument(
        "--raw", action="store_true", help="send the prompt as is, without the chat template"
    )
    generate.add_argument("--max-tokens", type=_positive_int, default=256)
    generate.add_argument("--temperature", type=float, default=0.7)
    generate.add_argument("--top-p", type=float, default=1.0)
    generate.add_argument("--top-k", type=int, default=0)
    generate.add_argument("--min-p", type=float, default=0.0)
    generate.add_argument("--repetition-penalty", type=float, default=1.0)
    generate.add_argument("--seed", type=int, help="the request's seed: the same seed, the same text")
    generate.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    _add_engine_args(generate)

    pull = sub.add_parser("pull", help="download / convert models into the local cache")
    pull.add_argument("models", nargs="+", metavar="model", help="alias, folder or .gguf")

    snapshot = sub.add_parser(
        "snapshot", help="write a model as one snapshot file (.swsnap), a model source that loads fast"
    )
    snapshot.add_argument("source", help="alias, folder or .gguf")
    snapshot.add_argument("-o", "--output", help="the file to write (default: ./NAME.swsnap)")
    snapshot.add_argument(
        "--dtype",
        choices=DTYPES,
        default="auto",
        help="the serving dtype stored (auto: bfloat16 for chat models, float32 for embedding models)",
    )
    return parser
