"""The wire's model objects: /v1/models, its load and unload actions, and config reloads."""

from __future__ import annotations

from msgspec import UNSET, Struct, UnsetType


class ModelCard(Struct):
    """OpenAI's model object, plus swiftserve's kind ("chat" / "embedding"), policy ("pinned" /
    "on-demand"), state ("cold", "loading", "resident", "unloading", "parked": unloaded with its
    weights kept in host memory, so its reload is fast) and, after a failed load,
    the error that sent it back to cold (until a load succeeds)."""

    id: str
    created: int
    owned_by: str = "swiftserve"
    object: str = "model"
    kind: str = "chat"
    policy: str = "pinned"
    state: str = "resident"
    error: str | UnsetType = UNSET  # left out while there is none


class ConfigReload(Struct):
    """The answer of POST /v1/models/reload: what re-reading the config file did."""

    added: list[str]
    unchanged: list[str]
    needs_restart: list[str]  # changed or removed in the file; served as before until a restart
    # Top-level keys (memory_budget, host_memory, idle_timeout) changed in the file: a restart applies them.
    settings_need_restart: list[str]
    object: str = "config.reload"


class ModelAction(Struct):
    """The answer of POST /v1/models/{id}/load or /unload."""

    id: str
    action: str
    result: str  # "loaded", "unloaded" or "already cold"
    state: str
    object: str = "model.action"


class ModelList(Struct):
    data: list[ModelCard]
    object: str = "list"
