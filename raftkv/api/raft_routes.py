"""Handlers of the Raft traffic: messages from peers, checked, then handed to the node in order.

Peers stream their messages (``raftStream``): one long request per peer and direction, each line handed to the
node as it arrives, with no answer per message; a reply travels on the replier's own stream. ``raftMessages``
takes a batch in one request, and each RPC's own endpoint (``/raft/append-entries``, ...) one message of its
kinds, for tools and tests. The cluster token is checked before any of this runs (the
spec marks these operations).
"""

from __future__ import annotations

from pydantic import ValidationError
from quart import Response, request

from raftkv import wire
from raftkv.api import models
from raftkv.api.binding import Operations
from raftkv.api.context import Api
from raftkv.api.errors import describe, error_response, json_response
from raftkv.forwarding import PeerMessage

operations = Operations[Api]()


class Refused(Exception):
    """A message this node must not take; the message says why (a 400)."""


def check(api: Api, messages: list[PeerMessage]) -> None:
    """Every message is for this node and from a node it knows of. A node with no configuration yet (it is
    joining) takes messages from any holder of the cluster token: its leader may reach it before it learns
    where its members are."""
    node = api.node
    for message in messages:
        if message.dst != node.config.id:
            raise Refused(f"message for {message.dst!r} reached node {node.config.id!r}")
        if node.route(message.src) is None and node.core.membership.members:
            raise Refused(f"message from unknown node {message.src!r}")


@operations("raftStream")
async def raft_stream(api: Api) -> Response:
    """Hand each line to the node as it arrives, until the sender ends the stream or this node begins to shut
    down (``Api.close_streams``); a line it must refuse ends the stream with a 400 naming the line."""
    reader = wire.FrameReader()
    lines = 0
    with api.until_closing():
        async for chunk in request.body:
            messages = []
            try:
                for line in reader.feed(chunk):
                    lines += 1
                    messages.append(wire.parse_raft_message(line))
                    check(api, messages[-1:])
            except ValidationError as e:
                return stream_refusal(400, f"line {lines}: invalid message: {describe(e)}")
            except Refused as e:
                return stream_refusal(400, f"line {lines}: {e}")
            except wire.FrameTooLarge as e:
                return stream_refusal(413, f"line {lines + 1}: {e}")
            api.node.deliver(*messages)
    return json_response(models.Accepted(), status=202)


def stream_refusal(status: int, message: str) -> Response:
    """The end of a stream on a bad line: the rest of the body is never read, so the connection closes."""
    return error_response(status, message, headers={"Connection": "close"})


def deliver(api: Api, messages: list[PeerMessage]) -> Response:
    """Hand messages that arrived in one request to the node, or refuse them all (a 400)."""
    try:
        check(api, messages)
    except Refused as e:
        return error_response(400, str(e))
    api.node.deliver(*messages)
    return json_response(models.Accepted(), status=202)


@operations("raftMessages")
async def raft_messages(api: Api) -> Response:
    return deliver(api, wire.parse_raft_batch(await request.get_data(as_text=False)))


async def one_message(api: Api) -> Response:
    """One message POSTed to the endpoint of its kind."""
    return deliver(api, [wire.parse_raft_message(await request.get_data(as_text=False), request.path)])


for operation_id in ("raftRequestVote", "raftAppendEntries", "raftInstallSnapshot", "raftTimeoutNow"):
    operations(operation_id)(one_message)
