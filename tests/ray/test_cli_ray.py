"""`swiftserve launch --ray`'s flags, without starting anything."""

from __future__ import annotations

from swiftserve.router.router_config import RouterConfig

from swiftserve.cli import main
from swiftserve.ray.launch import RayFlags, serve_spec


def test_ray_flags_without_ray_are_an_error(capsys):
    assert main(["launch", "--num-replicas", "2"]) == 2
    assert "--address, --num-cpus, --num-replicas and --ray-proxy go with --ray" in capsys.readouterr().err


def test_the_ray_proxy_flag_without_ray_is_an_error(capsys):
    assert main(["launch", "--ray-proxy", "ray"]) == 2
    assert "--ray-proxy go with --ray" in capsys.readouterr().err


def test_the_spec_takes_the_file_s_replicas_and_the_flag_wins(tmp_path):
    path = tmp_path / "swiftserve.yaml"
    path.write_text(
        "models: [{name: chat, source: smollm2-135m-instruct}]\nreplicas: {num_replicas: 3, num_cpus: 2}\n"
    )
    router = RouterConfig.from_file(path)
    spec = serve_spec(router, RayFlags(), api_key="k", max_body_bytes=1024)
    assert (spec.replicas.num_replicas, spec.replicas.num_cpus, spec.api_key) == (3, 2.0, "k")
    assert serve_spec(router, RayFlags(num_replicas=1), None, 1024).replicas.num_replicas == 1
    assert serve_spec(RouterConfig.from_flags(), RayFlags(), None, 1024).replicas.num_replicas == 1
