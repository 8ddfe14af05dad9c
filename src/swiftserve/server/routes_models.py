"""/v1/models (OpenAI's list, plus each model's kind, policy and state), GET /v1/models/{id} (one
of them, as the openai SDK's models.retrieve asks), the admin routes POST /v1/models/{name}/load
and /unload, and POST /v1/models/reload (re-read the config file, add its new models), behind the
API key like every /v1 route."""

from __future__ import annotations

import msgspec

from swiftserve.router.model_info import ModelInfo
from swiftserve.router.router import Router
from swiftserve.server.errors import APIError
from swiftserve.server.http import Handler, HTTPRequest, JSONResponse, Response
from swiftserve.server.protocol_common import encode
from swiftserve.server.protocol_models import ConfigReload, ModelAction, ModelCard, ModelList
from swiftserve.server.routes_pipelines import pipeline_cards

MODEL_PREFIX = "/v1/models/"
ADMIN_ACTIONS = ("load", "unload")


def _card(info: ModelInfo, created: int) -> ModelCard:
    return ModelCard(
        id=info.name,
        created=created,
        kind=info.kind,
        policy=info.policy,
        state=info.state,
        error=msgspec.UNSET if info.last_error is None else info.last_error,
    )


async def list_models(request: HTTPRequest) -> Response:
    app = request.app
    cards = [_card(info, app.created) for info in app.router.models()]
    cards += pipeline_cards(app.router, app.created)
    return JSONResponse(encode(ModelList(data=cards)))


async def retrieve_model(request: HTTPRequest) -> Response:
    """One model's card; UnknownModelError (404 model_not_found) for a name not served here."""
    name = request.path[len(MODEL_PREFIX) :]
    request.label(name)
    if name in request.app.router.pipelines:
        card = next(c for c in pipeline_cards(request.app.router, request.app.created) if c.id == name)
        return JSONResponse(encode(card))
    return JSONResponse(encode(_card(request.app.router.info(name), request.app.created)))


def model_route(path: str) -> tuple[str, dict[str, Handler]] | None:
    """The route template and handlers (by method) of a /v1/models/{...} path, else None."""
    target = admin_target(path)
    if target is not None:
        return f"{MODEL_PREFIX}{{name}}/{target[1]}", {"POST": model_action}
    if path.startswith(MODEL_PREFIX) and len(path) > len(MODEL_PREFIX):
        return f"{MODEL_PREFIX}{{id}}", {"GET": retrieve_model}  # an id may hold "/": org/model
    return None


def admin_target(path: str) -> tuple[str, str] | None:
    """(model name, action) of /v1/models/{name}/{load|unload}, else None."""
    if not path.startswith(MODEL_PREFIX):
        return None
    name, _, action = path[len(MODEL_PREFIX) :].rpartition("/")
    return (name, action) if name and action in ADMIN_ACTIONS else None


async def model_action(request: HTTPRequest) -> Response:
    target = admin_target(request.path)
    if target is None:  # model_route sends only admin paths here
        raise APIError(404, f"Invalid URL ({request.method} {request.path})", code="not_found")
    name, action = target
    request.label(name)
    router: Router = request.app.router
    changed = await (router.load(name) if action == "load" else router.unload(name))
    info = router.info(name)
    done = {"load": "loaded", "unload": "unloaded" if changed else "already cold"}[action]
    body = ModelAction(id=name, action=action, result=done, state=info.state)
    return JSONResponse(encode(body))


async def reload_config(request: HTTPRequest) -> Response:
    result = await request.app.reload_config()
    body = ConfigReload(
        list(result.added),
        list(result.unchanged),
        list(result.needs_restart),
        list(result.settings_need_restart),
    )
    return JSONResponse(encode(body))
