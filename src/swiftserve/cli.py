"""The `swiftserve` command: launch (OpenAI-compatible server), generate (one prompt), pull,
snapshot (one file that loads fast)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Iterator

from swiftserve.cli_parser import build_parser
from swiftserve.loader.aliases import ModelFetchError
from swiftserve.router.router_config import RouterConfig
from swiftserve.server.launch import ServeConfig


class _Signalled(BaseException):
    """SIGTERM or SIGINT as an exception: what a file writer cleans up after (the snapshot writer
    removes its temporary file on any exception) then runs for a signal too, instead of the
    process dying with a ~300 MB hidden file left behind. A BaseException, as KeyboardInterrupt
    is, so no `except Exception` swallows it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def _signals_as_exceptions() -> Iterator[None]:
    def raise_signalled(signum: int, frame) -> None:
        raise _Signalled(signum)

    handled = (signal.SIGTERM, signal.SIGINT)
    previous = {sig: signal.signal(sig, raise_signalled) for sig in handled}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version or args.command == "doctor":
        from swiftserve.doctor import report

        print(report())
        return 0
    if args.command is None:
        parser.error("a command is required (launch, generate, pull, snapshot, doctor)")
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        if args.command == "launch":
            return _launch(args)
        if args.command == "generate":
            return asyncio.run(_generate(args))
        with _signals_as_exceptions():  # the two commands that write files into place
            return _snapshot(args) if args.command == "snapshot" else _pull(args)
    except (ValueError, FileNotFoundError, ModelFetchError) as exc:
        print(f"swiftserve: error: {exc}", file=sys.stderr)
        return 2
    except _Signalled as exc:
        return 128 + exc.signum  # what a shell reports for a process the signal ended
    except KeyboardInterrupt:
        return 130


def _launch(args) -> int:
    from swiftserve.server.launch import serve

    router = RouterConfig.build(
        _specs(args.models),
        _specs(args.on_demand),
        config_file=args.config,
        idle_timeout_s=args.idle_timeout,
        memory_budget=args.memory_budget,
        host_memory=args.host_memory,
        default_max_tokens=args.default_max_tokens,
        request_timeout_s=args.request_timeout,
        chat_lanes=args.chat_lanes,
        parallel_loads=args.parallel_loads,
        snapshots=args.snapshots,
        dtype=args.dtype,
        device=args.device,
        max_num_seqs=args.max_num_seqs,
        max_num_batched_tokens=args.max_num_batched_tokens,
        max_model_len=args.max_model_len,
        max_queue=args.max_queue,
        kv_cache_memory=args.kv_cache_memory,
        seed=args.seed,
        grammar_compile_timeout_s=args.grammar_compile_timeout,
    )
    if args.ray:
        return _launch_on_ray(args, router)
    if args.address or args.num_cpus or args.num_replicas or args.ray_proxy:
        raise ValueError("--address, --num-cpus, --num-replicas and --ray-proxy go with --ray")
    config = ServeConfig(
        router, host=args.host, port=args.port, api_key=args.api_key, max_body_bytes=args.max_body_bytes
    )
    return serve(config)


def _launch_on_ray(args, router: RouterConfig) -> int:
    # The only import of swiftserve.ray: a launch without --ray never loads it (or Ray).
    from swiftserve.ray.launch import RayFlags, launch_on_ray, serve_spec

    flags = RayFlags(args.address, args.num_cpus, args.num_replicas, args.ray_proxy or "haproxy")
    spec = serve_spec(router, flags, args.api_key, args.max_body_bytes)
    return launch_on_ray(spec, flags, args.host, args.port)


def _specs(text: str | None) -> tuple[str, ...] | None:
    return None if text is None else tuple(m for m in text.split(",") if m.strip())


async def _generate(args) -> int:
    from swiftserve.config import EngineConfig
    from swiftserve.engine.async_engine import AsyncEngine
    from swiftserve.sampling_params import SamplingParams

    params = SamplingParams(
        max_tokens=args.max_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        min_p=args.min_p,
        repetition_penalty=args.repetition_penalty,
        seed=args.seed,
        stop=tuple(args.stop),
    )
    config = EngineConfig(
        model=args.model,
        dtype=args.dtype,
        device=args.device,
        max_model_len=args.max_model_len,
        kv_cache_memory=args.kv_cache_memory,
    )
    engine = await asyncio.to_thread(AsyncEngine, config)
    await engine.start()
    try:
        if args.raw:
            prompt: str | list[int] = args.prompt
        else:
            text = engine.apply_chat_template([{"role": "user", "content": args.prompt}])
            prompt = engine.tokenizer.encode(text, add_special_tokens=False)
        printed = 0
        async for output in engine.generate(prompt, params):
            text = output.outputs[0].text
            sys.stdout.write(text[printed:])
            sys.stdout.flush()
            printed = len(text)
        sys.stdout.write("\n")
    finally:
        await engine.shutdown()
    return 0


def _pull(args) -> int:
    from swiftserve.loader import resolve_model

    for model in args.models:
        print(f"{model}: {resolve_model(model)}")
    return 0


def _snapshot(args) -> int:
    from swiftserve.engine.snapshot_export import export_snapshot
    from swiftserve.router.registry import default_served_name

    output = args.output or f"{default_served_name(args.source)}.swsnap"
    path = export_snapshot(args.source, output, dtype=args.dtype)
    print(f"{args.source}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
