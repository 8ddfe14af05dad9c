"""/v1/models (OpenAI's list, plus each model's kind, policy and state) and the admin routes
POST /v1/models/{name}/load and /unload, behind the API key like every /v1 route."""

from __future__ import annotations

from swiftserve.server import protocol
from swiftserve.server.errors import from_exception, model_not_found
from swiftserve.server.http import JSONResponse, Request, Response

ADMIN_PREFIX = "/v1/models/"
ADMIN_ACTIONS = ("load", "unload")


async def list_models(request: Request) -> Response:
    app = request.app
    router = app.router
    cards = []
    for served in app.registry.models():
        card = protocol.ModelCard(id=served.name, created=served.created or app.created, kind=served.kind)
        if router is not None and served.name in router.names():  # else loaded at start, kept
            info = router.info(served.name)
            card.policy, card.state = info.policy, info.state
        cards.append(card)
    return JSONResponse(protocol.encode(protocol.ModelList(data=cards)))


def admin_target(path: str) -> tuple[str, str] | None:
    """(model name, action) of /v1/models/{name}/{load|unload}, else None."""
    if not path.startswith(ADMIN_PREFIX):
        return None
    name, _, action = path[len(ADMIN_PREFIX) :].rpartition("/")
    return (name, action) if name and action in ADMIN_ACTIONS else None


async def model_action(request: Request) -> Response:
    name, action = admin_target(request.path)
    request.model = name
    router = request.app.router
    if router is None or name not in router.names():
        raise model_not_found(name)
    try:
        changed = await (router.load(name) if action == "load" else router.unload(name))
    except Exception as exc:  # noqa: BLE001 - typed errors become their HTTP answer
        error = from_exception(exc, name)
        if error is None:
            raise
        raise error from None
    info = router.info(name)
    done = {"load": "loaded", "unload": "unloaded" if changed else "already cold"}[action]
    body = protocol.ModelAction(id=name, action=action, result=done, state=info.state)
    return JSONResponse(protocol.encode(body))
