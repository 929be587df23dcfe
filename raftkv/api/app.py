"""The HTTP face of a node: the client API, operations endpoints and the Raft RPCs, as openapi.yaml describes.

Every route validates its input first (a 400 never depends on which node answered), then either serves the
call here or, when only the leader may, hands it to ``LeaderRouter``: forward to the leader and relay its
answer, or redirect with ``?redirect=true`` -- as etcd, Consul and rqlite do, so plain curl works on any node.
"""

from __future__ import annotations

import contextlib
import hmac
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel
from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.routing import PathConverter

from raftkv import kv, wire
from raftkv.api import models
from raftkv.api.docs import install_docs
from raftkv.api.errors import error_response, install_error_handlers
from raftkv.node import NotLeader, RaftNode, Unavailable

SEED_KEY = "default"
FORWARDED_HEADER = "X-Raft-Forwarded"
LEADER_HEADER = "X-Raft-Leader"
DRAINING = "RAFTKV_DRAINING"  # app.config flag set when the node starts shutting down
RELAYED_HEADERS = ("Content-Type", "Location", "Retry-After", "Allow")

T = TypeVar("T")


def create_app(node: RaftNode) -> QuartTrio:
    app = QuartTrio(__name__, static_folder=None)
    app.url_map.converters["key"] = KeyConverter
    app.config["MAX_CONTENT_LENGTH"] = 64 * 1024 * 1024  # snapshots travel in one body
    install_error_handlers(app)
    install_docs(app)
    router = LeaderRouter(node)
    app.before_serving(router.open)
    app.after_serving(router.close)

    @app.after_request
    async def finish_connection(response: Response) -> Response:
        """Keep keep-alive connections healthy: read any request body the route left unread (hypercorn
        stalls the next request on a connection whose body was not consumed), and once shutdown began,
        close each connection after its answer (peers keep theirs busy with heartbeats, and the server would
        otherwise wait for them until its graceful timeout)."""
        with contextlib.suppress(RequestEntityTooLarge):  # already answered 413; nothing left to drain
            await request.get_data()
        if app.config.get(DRAINING):
            response.headers["Connection"] = "close"
        return response

    # --- the seed's single value -----------------------------------------------------------------------

    @app.get("/")
    async def get_seed_value() -> Response:
        query = models.ReadQuery.model_validate(request.args.to_dict())
        item = await router.read(query, lambda: node.kv.get(SEED_KEY))
        if isinstance(item, Response):
            return item
        return json_response(models.ValueBody(value=item.value if item else None))

    @app.post("/")
    async def set_seed_value() -> Response:
        query = models.WriteQuery.model_validate(request.args.to_dict())
        body = models.parse_value_body(await request.get_data(as_text=False), request.mimetype or None)
        result = await router.write(query, kv.Put(key=SEED_KEY, value=body.value))
        if isinstance(result, Response):
            return result
        if isinstance(result, kv.Ok):
            return json_response(models.ValueBody(value=result.value))
        return write_result_response(result)

    # --- keys ------------------------------------------------------------------------------------------

    @app.get("/kv")
    async def list_keys() -> Response:
        query = models.ListQuery.model_validate(request.args.to_dict())
        items = await router.read(query, lambda: node.kv.range(query.prefix, query.limit))
        if isinstance(items, Response):
            return items
        return json_response(
            models.KeyValueList(items=[key_value_model(i) for i in items], revision=node.kv.revision)
        )

    @app.get("/kv/<key:key>")
    async def get_key(key: str) -> Response:
        key = models.parse_key(key)
        query = models.ReadQuery.model_validate(request.args.to_dict())
        item = await router.read(query, lambda: node.kv.get(key))
        if isinstance(item, Response):
            return item
        if item is None:
            return error_response(404, f"key {key!r} not found")
        return json_response(key_value_model(item))

    async def put_key(key: str) -> Response:
        key = models.parse_key(key)
        query = models.WriteQuery.model_validate(request.args.to_dict())
        body = models.WriteRequest.model_validate_json(await request.get_data(as_text=False))
        command = kv.Put(
            key=key,
            value=body.value,
            prev_value=body.prev_value if body.has_prev_value else kv.UNSET,
            prev_revision=body.prev_revision,
        )
        result = await router.write(query, command)
        return result if isinstance(result, Response) else write_result_response(result)

    app.put("/kv/<key:key>")(put_key)
    app.post("/kv/<key:key>")(put_key)

    @app.delete("/kv/<key:key>")
    async def delete_key(key: str) -> Response:
        key = models.parse_key(key)
        query = models.WriteQuery.model_validate(request.args.to_dict())
        result = await router.write(query, kv.Delete(key=key))
        return result if isinstance(result, Response) else write_result_response(result)

    # --- operations ------------------------------------------------------------------------------------

    @app.get("/status")
    async def get_status() -> Response:
        return json_response(models.Status.model_validate(node.status()))

    @app.get("/healthz")
    async def get_health() -> Response:
        return json_response(models.Health())

    @app.get("/readyz")
    async def get_readiness() -> Response:
        if await node.ready_to_serve():
            return json_response(models.Health())
        return error_response(
            503, "not ready: no known leader or not caught up", headers={"Retry-After": "1"}
        )

    # --- Raft RPCs -------------------------------------------------------------------------------------

    async def raft_messages() -> Response:
        """One message (on its own endpoint) or a batch: checked whole, then handed to the node in order."""
        if node.config.token and not authorized(node.config.token):
            return error_response(
                401, "missing or wrong cluster token", headers={"WWW-Authenticate": "Bearer"}
            )
        body = await request.get_data(as_text=False)
        if request.path == wire.RAFT_BATCH_PATH:
            messages = wire.parse_raft_batch(body)
        else:
            messages = [wire.parse_raft_message(body, request.path)]
        for message in messages:
            if message.dst != node.config.id:
                return error_response(400, f"message for {message.dst!r} reached node {node.config.id!r}")
            if message.src not in node.config.members:
                return error_response(400, f"message from unknown node {message.src!r}")
        node.deliver(*messages)
        return json_response(models.Accepted(), status=202)

    for path in [*wire.RAFT_MODELS_BY_PATH, wire.RAFT_BATCH_PATH]:
        app.add_url_rule(path, endpoint=path, view_func=raft_messages, methods=["POST"])

    return app


class KeyConverter(PathConverter):
    """A key is any non-empty text, slashes and control characters included (werkzeug's ``path`` stops at a
    newline); parse_key then enforces the spec's limits with a clear 400."""

    regex = r"[\s\S]+"


class LeaderRouter:
    """Runs a call on the leader: here when this node leads, else forwarded (or redirected) to the leader."""

    def __init__(self, node: RaftNode) -> None:
        self.node = node
        self.client: httpx.AsyncClient | None = None

    async def open(self) -> None:
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=32)
        # A second more than the leader's own deadline, so its 503 (and its reason) reaches the client.
        timeout = self.node.config.request_timeout + 1
        self.client = httpx.AsyncClient(timeout=timeout, limits=limits, trust_env=False)

    async def close(self) -> None:
        if self.client is not None:
            await self.client.aclose()

    async def write(self, query: models.WriteQuery, command: kv.Command) -> kv.Result | Response:
        try:
            data = kv.encode_command(command)
        except kv.CommandEncodeError as e:
            return error_response(400, str(e))
        return await self._on_leader(query.redirect, lambda: self.node.write(data))

    async def read(self, query: models.ReadQuery, read: Callable[[], T]) -> T | Response:
        """``read`` the local store, after a ReadIndex barrier unless the client asked for a stale read."""
        if query.consistency == "stale":
            return read()

        async def linearizable() -> T:
            await self.node.read_barrier()
            return read()

        return await self._on_leader(query.redirect, linearizable)

    async def _on_leader(self, redirect: bool, call: Callable[[], Awaitable[T]]) -> T | Response:
        try:
            return await call()
        except Unavailable as e:
            return unavailable(str(e))
        except NotLeader:
            pass
        leader = self.node.leader
        if leader is None or leader[0] == self.node.config.id:
            return unavailable("no leader is known at the moment")
        if request.headers.get(FORWARDED_HEADER):
            return unavailable(f"this node is not the leader either; try {leader[1]}")
        target = leader[1] + raw_path_and_query()
        if redirect:
            return error_response(
                307,
                "not the leader",
                leader=leader[1],
                headers={"Location": target, LEADER_HEADER: " ".join(leader)},
            )
        return await self._forward(target, leader)

    async def _forward(self, target: str, leader: tuple[str, str]) -> Response:
        assert self.client is not None
        headers = {FORWARDED_HEADER: self.node.config.id}
        if "Content-Type" in request.headers:
            headers["Content-Type"] = request.headers["Content-Type"]
        try:
            answer = await self.client.request(
                request.method, target, content=await request.get_data(as_text=False), headers=headers
            )
        except httpx.HTTPError as e:
            return unavailable(f"the leader {leader[0]} did not answer: {type(e).__name__}")
        relayed = {name: answer.headers[name] for name in RELAYED_HEADERS if name in answer.headers}
        relayed[LEADER_HEADER] = " ".join(leader)
        return Response(answer.content, status=answer.status_code, headers=relayed)


# --- helpers ------------------------------------------------------------------------------------------------


def json_response(model: BaseModel, status: int = 200) -> Response:
    return Response(model.model_dump_json(), status=status, content_type="application/json")


def key_value_model(item: kv.KeyValue) -> models.KeyValue:
    return models.KeyValue(key=item.key, value=item.value, revision=item.mod_revision)


def write_result_response(result: kv.Result) -> Response:
    match result:
        case kv.Ok(key=key, value=value, revision=revision):
            return json_response(models.KeyValue(key=key, value=value, revision=revision))
        case kv.Deleted(key=key, revision=revision):
            return json_response(models.DeleteResult(key=key, revision=revision))
        case kv.NotFound(key=key):
            return error_response(404, f"key {key!r} not found")
        case kv.PreconditionFailed(key=key, current=current):
            current_json: dict[str, Any] | None = (
                key_value_model(current).model_dump(mode="json") if current else None
            )
            return error_response(412, f"precondition failed for key {key!r}", current=current_json)
        case kv.InvalidCommand(reason=reason):
            return error_response(400, f"invalid command: {reason}")


def unavailable(message: str) -> Response:
    return error_response(503, message, headers={"Retry-After": "1"})


def raw_path_and_query() -> str:
    """The request's path exactly as sent (percent-encoding intact) plus its query string."""
    path = request.scope.get("raw_path") or request.path.encode()
    query = request.scope.get("query_string", b"")
    return path.decode("latin-1") + ("?" + query.decode("latin-1") if query else "")


def authorized(token: str) -> bool:
    given = request.headers.get("Authorization", "")
    return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())
