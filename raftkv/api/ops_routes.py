"""Handlers of the operations endpoints: status, metrics, liveness and readiness."""

from __future__ import annotations

from quart import Response

from raftkv import metrics
from raftkv.api import models
from raftkv.api.binding import Operations
from raftkv.api.context import Api
from raftkv.api.errors import error_response, json_response

operations = Operations[Api]()


@operations("getStatus")
async def get_status(api: Api) -> Response:
    return json_response(models.Status.model_validate(api.node.status()))


@operations("getMetrics")
async def get_metrics(api: Api) -> Response:
    return Response(api.node.metrics.exposition(), content_type=metrics.CONTENT_TYPE)


@operations("getHealth")
async def get_health(api: Api) -> Response:
    return json_response(models.Health())


@operations("getReadiness")
async def get_readiness(api: Api) -> Response:
    if await api.node.ready_to_serve():
        return json_response(models.Health())
    return error_response(503, "not ready: no known leader or not caught up", headers={"Retry-After": "1"})
