"""How a node's log lines look: plain text (the default), or one JSON object per line (``--log-format json``)
for log shippers that should not have to parse text.

Every line names the node; once the node runs, it also carries the node's term and role as they are at the
moment of the line, which a ``logging.Filter`` on the handler reads from the node. The node is found through a
context variable that ``serve`` sets, so every task and worker thread it starts sees it, and two nodes run in
one process (tests) each see their own.
"""

from __future__ import annotations

import contextvars
import datetime
import json
import logging
from collections.abc import Callable
from typing import Final, Literal

LogFormat = Literal["text", "json"]
TEXT_FORMAT: Final = "%(asctime)s %(node_id)s %(levelname)s %(name)s: %(message)s"

NodeFacts = Callable[[], tuple[int, str]]
"""The node's (term, role) now."""

_node: contextvars.ContextVar[NodeFacts] = contextvars.ContextVar("raftkv_logged_node")


def follow(facts: NodeFacts) -> None:
    """Log lines from this context on (the calling task and all it starts) carry the term and role ``facts``
    gives at each line."""
    _node.set(facts)


class NodeContext(logging.Filter):
    """Adds ``node_id``, ``term`` and ``role`` to every record (term and role None until the node runs)."""

    def __init__(self, node_id: str) -> None:
        super().__init__()
        self.node_id = node_id

    def filter(self, record: logging.LogRecord) -> bool:
        facts = _node.get(None)
        record.node_id = self.node_id
        record.term, record.role = facts() if facts is not None else (None, None)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, node, term and role, and the
    traceback as ``exception`` when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, object] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "node": getattr(record, "node_id", None),
            "term": getattr(record, "term", None),
            "role": getattr(record, "role", None),
        }
        if record.exc_info:
            fields["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            fields["stack"] = self.formatStack(record.stack_info)
        return json.dumps(fields, default=str)


def configure(node_id: str, level: str, log_format: LogFormat) -> None:
    """Send the process's log lines to stderr, in ``log_format``, each naming ``node_id``."""
    handler = logging.StreamHandler()
    handler.addFilter(NodeContext(node_id))
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
