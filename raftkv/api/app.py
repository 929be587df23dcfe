"""The HTTP face of a node: one Quart-Trio app bound from openapi.yaml, serving clients and peers alike.

``create_app`` binds each operation of the spec to its handler (``binding.bind``), guarded by the security
the spec declares for it: the cluster token for the Raft RPCs and the cluster calls, the optional client token
for the client API, nothing for health, readiness and the docs. Request bodies are bounded (413) and must
arrive within the read timeout (408).
"""

from __future__ import annotations

import contextlib
import hmac
import time
from typing import Final

from quart import Response, g, request
from quart_trio import QuartTrio
from werkzeug.exceptions import RequestEntityTooLarge, RequestTimeout
from werkzeug.routing import PathConverter

from raftkv import kv
from raftkv.api import (
    cluster_routes,
    dashboard_routes,
    docs,
    events,
    fault_routes,
    kv_routes,
    lease_routes,
    ops_routes,
    raft_routes,
)
from raftkv.api.asgi import ShieldLastSend
from raftkv.api.binding import HTTP_METHODS, bind, spec_operations
from raftkv.api.context import REPLAYED_HEADER, Api
from raftkv.api.errors import error_response, install_error_handlers
from raftkv.api.router import LEADER_HEADER, REVISION_HEADER, TERM_HEADER, LeaderRouter
from raftkv.lease_keeper import LeaseKeeper
from raftkv.node import RaftNode
from raftkv.trace import TRACE_HEADER, StageClock

DRAINING: Final = "RAFTKV_DRAINING"  # app.config flag set when the node starts shutting down
API: Final = "raftkv.api"  # app.extensions key of the Api the handlers share

UNMATCHED_ROUTE: Final = "unmatched"  # the route label of a request no operation matched (404, 405)

CLUSTER_TOKEN: Final = "clusterToken"
CLIENT_TOKEN: Final = "clientToken"

RAFT_BODY_LIMIT: Final = 16 << 20
"""Bytes of one Raft request body: a batch of messages (the transport keeps them to about 8 MiB), or a chunk
of snapshot data (1 MiB); snapshots themselves never travel in one body."""


def create_app(node: RaftNode[kv.KVStore]) -> QuartTrio:
    config = node.config
    app = QuartTrio(__name__, static_folder=None)
    app.url_map.converters["key"] = KeyConverter
    app.config["BODY_TIMEOUT"] = config.read_timeout
    install_error_handlers(app)
    router = LeaderRouter(node, config.peer_tls())
    app.before_serving(router.open)
    app.after_serving(router.close)
    api = Api(node, router, config.max_value_bytes, LeaseKeeper(node))
    app.extensions[API] = api
    tokens = {CLUSTER_TOKEN: config.cluster_token, CLIENT_TOKEN: config.client_api_token}

    async def guard(schemes: frozenset[str]) -> Response | None:
        """Let a request through if it carries the token its operation's security names (constant-time
        compare). Without a cluster token (``--insecure``) the cluster calls are open; without a client token,
        the client API is."""
        for scheme in schemes & tokens.keys():
            token = tokens[scheme]
            if token is None:
                if scheme == CLIENT_TOKEN or config.insecure:
                    continue
                return unauthorized(
                    "this node has no cluster token (start it with --token), so it takes no cluster calls"
                )
            given = request.headers.get("Authorization", "").encode()
            if not hmac.compare_digest(given, f"Bearer {token}".encode()):
                return unauthorized(f"missing or wrong {scheme_name(scheme)}")
        return None

    routes = {operation.operation_id: operation.path for operation in spec_operations(docs.SPEC)}

    @app.before_request
    async def start_clock() -> None:
        g.started = time.perf_counter()

    @app.after_request
    async def time_request(response: Response) -> Response:
        """Time the request by its route template, not its path, so keys do not become label values."""
        method = request.method if request.method.lower() in HTTP_METHODS else "OTHER"
        route = routes.get(request.endpoint or "", UNMATCHED_ROUTE)
        status = str(response.status_code)
        elapsed = time.perf_counter() - g.started
        node.metrics.http_seconds.labels(route=route, method=method, status=status).observe(elapsed)
        return response

    @app.before_request
    async def limit_body() -> None:
        request.max_content_length = (
            RAFT_BODY_LIMIT if request.path.startswith("/raft/") else config.max_request_bytes
        )
        if TRACE_HEADER in request.headers:
            g.trace = StageClock()

    @app.after_request
    async def finish_connection(response: Response) -> Response:
        """Keep keep-alive connections healthy: read any request body the route left unread (hypercorn
        stalls the next request on a connection whose body was not consumed), and once shutdown began,
        close each connection after its answer without reading on (peers keep theirs busy with heartbeats,
        and the body of a peer's stream that shutdown ended never ends: the server would wait for it until
        its graceful timeout)."""
        if not request.path.startswith(("/raft/", "/docs", "/openapi")):  # as etcd's response header does
            response.headers.setdefault(REVISION_HEADER, str(node.machine.revision))
            response.headers.setdefault(TERM_HEADER, str(node.core.term))
        if g.get("replayed"):
            response.headers[REPLAYED_HEADER] = "true"
        if (leader := g.get("relayed_from")) is not None:
            response.headers[LEADER_HEADER] = " ".join(leader)
        if (trace := g.get("trace")) is not None:
            trace.mark("answered")
            response.headers[TRACE_HEADER] = trace.header()
        if response.status_code in (408, 413) or app.config.get(DRAINING):  # do not wait for the body
            response.headers["Connection"] = "close"
        if response.headers.get("Connection") == "close":
            return response
        if request.content_length or "Transfer-Encoding" in request.headers:  # a body that may be unread
            with contextlib.suppress(RequestEntityTooLarge, RequestTimeout):
                await request.get_data()  # costs a scheduler round even when read already: only if needed
        return response

    @app.after_request
    async def allow_member_origins(response: Response) -> Response:
        return events.allow_member_origins(node, response)

    app.asgi_app = ShieldLastSend(app.asgi_app)  # type: ignore[method-assign]
    bind(
        app,
        docs.SPEC,
        api,
        [
            kv_routes.operations,
            lease_routes.operations,
            ops_routes.operations,
            cluster_routes.operations,
            raft_routes.operations,
            docs.operations,
            events.operations,
            dashboard_routes.operations,
            fault_routes.operations,
        ],
        guard,
    )
    return app


def app_api(app: QuartTrio) -> Api:
    """What the handlers of ``app`` share (the node's lease keeper among it, for the server to run)."""
    api: Api = app.extensions[API]
    return api


def begin_draining(app: QuartTrio) -> None:
    """Shutdown begins: close each connection after its answer, and end the peers' streams (the server waits
    for every request in flight, and a stream would otherwise last until the peer ends it)."""
    app.config[DRAINING] = True
    app_api(app).close_streams()


def unauthorized(message: str) -> Response:
    return error_response(401, message, headers={"WWW-Authenticate": "Bearer"})


def scheme_name(scheme: str) -> str:
    return {CLUSTER_TOKEN: "cluster token", CLIENT_TOKEN: "client token"}[scheme]


class KeyConverter(PathConverter):
    """A key is any non-empty text, slashes and control characters included (werkzeug's ``path`` stops at a
    newline); parse_key then enforces the spec's limits with a clear 400."""

    regex = r"[\s\S]+"
    part_isolating = False  # werkzeug infers "one path segment" from a regex without a literal "/"
