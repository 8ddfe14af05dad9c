"""The public schema corpora of the schema coverage run, read from a folder outside git.

Neither corpus is vendored: MaskBench's data (guidance-ai/jsonschemabench) has no license file,
and the JSON Schema Test Suite (MIT) is fetched the same way for symmetry. Fetch both once:

    mkdir -p ~/.cache/swiftserve/schema-corpus && cd ~/.cache/swiftserve/schema-corpus
    git clone --depth 1 https://github.com/json-schema-org/JSON-Schema-Test-Suite
    git clone --depth 1 --filter=blob:none --sparse https://github.com/guidance-ai/jsonschemabench
    git -C jsonschemabench sparse-checkout set maskbench/data && mv jsonschemabench/maskbench/data maskbench

JSON-Schema-Test-Suite/tests/draft2020-12/*.json (and optional/format/) are lists of
{description, schema, tests: [{description, data, valid}]}; maskbench/*.json are one schema each,
{schema, tests: [{data, valid, ...}]}, named `<group>---<id>.json` or `<group>_<n>.json`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_ROOT = Path.home() / ".cache" / "swiftserve" / "schema-corpus"
_GROUP = re.compile(r"^(.*?)(?:---.*|_\d+)\.json$")


@dataclass
class Instance:
    data: Any
    valid: bool
    note: str  # what the corpus says the instance tests


@dataclass
class CorpusSchema:
    id: str
    group: str  # the Test Suite's keyword file, MaskBench's source (Github_hard, Kubernetes...)
    schema: Any
    instances: list[Instance]


def load_test_suite(root: Path = DEFAULT_ROOT) -> list[CorpusSchema]:
    tests = root / "JSON-Schema-Test-Suite" / "tests" / "draft2020-12"
    files = sorted(tests.glob("*.json")) + sorted((tests / "optional" / "format").glob("*.json"))
    _require(files, tests)
    return [schema for path in files for schema in _suite_file(path, tests)]


def _suite_file(path: Path, tests: Path) -> list[CorpusSchema]:
    group = str(path.relative_to(tests).with_suffix(""))
    cases = json.loads(path.read_text())
    return [CorpusSchema(f"{group}#{i}", group, c["schema"], _suite_tests(c)) for i, c in enumerate(cases)]


def _suite_tests(case: dict) -> list[Instance]:
    about = case["description"]
    return [Instance(t["data"], t["valid"], f"{about}: {t['description']}") for t in case["tests"]]


def load_maskbench(root: Path = DEFAULT_ROOT, per_group: int | None = None) -> list[CorpusSchema]:
    """per_group: at most this many schemas of each source, spread over its sorted files (the
    whole corpus is ~11k schemas and ~2M tokens per tokenizer)."""
    folder = root / "maskbench"
    files = sorted(folder.glob("*.json"))
    _require(files, folder)
    groups: dict[str, list[Path]] = {}
    for path in files:
        match = _GROUP.match(path.name)
        groups.setdefault(match.group(1) if match else "other", []).append(path)
    chosen = [p for paths in groups.values() for p in _spread(paths, per_group)]
    return [schema for path in chosen if (schema := _maskbench_file(path)) is not None]


def _spread(paths: list[Path], limit: int | None) -> list[Path]:
    if limit is None or len(paths) <= limit:
        return paths
    step = len(paths) / limit
    return [paths[int(i * step)] for i in range(limit)]


def _maskbench_file(path: Path) -> CorpusSchema | None:
    """None for a schema without instances (about 1.5k of them): nothing to force through."""
    case = json.loads(path.read_text())
    tests = case.get("tests") or []
    if not tests:
        return None
    match = _GROUP.match(path.name)
    instances = [Instance(t["data"], t["valid"], t.get("description", "")) for t in tests]
    return CorpusSchema(path.stem, match.group(1) if match else "other", case["schema"], instances)


def _require(files: list[Path], where: Path) -> None:
    if not files:
        raise SystemExit(f"no corpus files under {where}: fetch them as the docstring of {__name__} says")
