"""``PUT /cluster/partition``: cut this node off from chosen peers, for the dashboard's partition button in
the cluster ``raftkv cluster`` runs. Only a node started with ``--allow-fault-injection`` takes it (403
otherwise); the node then drops every peer message to and from those peers (``RaftNode.cut_off``)."""

from __future__ import annotations

from quart import Response, request

from raftkv.api import models
from raftkv.api.binding import Operations
from raftkv.api.context import Api
from raftkv.api.errors import error_response, json_response

operations = Operations[Api]()


@operations("setPartition")
async def set_partition(api: Api) -> Response:
    if not api.node.config.allow_fault_injection:
        return error_response(403, "fault injection is off (start the node with --allow-fault-injection)")
    partition = models.Partition.model_validate_json(await request.get_data(as_text=False))
    api.node.cut_off = frozenset(partition.peers)
    return json_response(partition)
