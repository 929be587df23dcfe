"""Handlers of the Raft RPCs: messages from peers, checked whole, then handed to the node in order.

Transport is one-way: each POST is answered ``202 {}`` once its messages are handed over, and a reply travels
as its own POST. The cluster token is checked before any of this runs (the spec marks these operations).
"""

from __future__ import annotations

from quart import Response, request

from raftkv import wire
from raftkv.api import models
from raftkv.api.binding import Operations
from raftkv.api.context import Api
from raftkv.api.errors import error_response, json_response
from raftkv.raft.types import AnyMessage

operations = Operations[Api]()


async def deliver(api: Api, messages: list[AnyMessage]) -> Response:
    node_id = api.node.config.id
    for message in messages:
        if message.dst != node_id:
            return error_response(400, f"message for {message.dst!r} reached node {node_id!r}")
        if api.node.route(message.src) is None:
            return error_response(400, f"message from unknown node {message.src!r}")
    api.node.deliver(*messages)
    return json_response(models.Accepted(), status=202)


async def one_message(api: Api) -> Response:
    body = await request.get_data(as_text=False)
    return await deliver(api, [wire.parse_raft_message(body, request.path)])


for operation_id in (
    "raftRequestVote",
    "raftAppendEntries",
    "raftInstallSnapshot",
    "raftTimeoutNow",
    "raftReadIndex",
):
    operations(operation_id)(one_message)


@operations("raftMessages")
async def raft_messages(api: Api) -> Response:
    return await deliver(api, wire.parse_raft_batch(await request.get_data(as_text=False)))
