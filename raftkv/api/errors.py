"""JSON answers: every error leaves the app as ``{"error": "<readable message>", ...}`` with a fitting status.

Quart's own 404/405 pages are HTML and pydantic's errors carry raw input that may not serialise, so both are
translated here once instead of in every route. Bad input is a 400, never a 500.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping

from pydantic import BaseModel, ValidationError
from quart import Quart, Response
from werkzeug.exceptions import HTTPException

from raftkv.node import NodeStopped

logger = logging.getLogger(__name__)

JSON_MEDIA_TYPE = "application/json"


class Answer(Exception):
    """Stop handling the request and send ``response`` instead (a relayed answer, a redirect, a 503, ...)."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


def json_response(model: BaseModel, status: int = 200, *, exclude_none: bool = False) -> Response:
    body = model.model_dump_json(exclude_none=exclude_none)
    return Response(body, status=status, content_type=JSON_MEDIA_TYPE)


def error_response(
    status: int, message: str, *, headers: Mapping[str, str] | None = None, **extra: object
) -> Response:
    """A JSON error answer: ``{"error": message, **extra}``. Values that are not JSON are sent as ``str``."""
    body = json.dumps({"error": message, **extra}, default=str)
    return Response(body, status=status, headers=dict(headers or {}), content_type=JSON_MEDIA_TYPE)


async def _answer(answer: Answer) -> Response:
    return answer.response


async def _http_exception(error: HTTPException) -> Response:
    """Quart's routing and ``abort()`` errors, keeping their headers (``Allow`` on a 405, ``Location`` on a
    trailing-slash redirect) but not their HTML content type."""
    headers = {name: value for name, value in error.get_headers() if name.lower() != "content-type"}
    return error_response(error.code or 500, error.description or error.name, headers=headers)


async def _validation_error(error: ValidationError) -> Response:
    """Input that does not fit its model. The raw input is left out: it may be huge or not serialisable."""
    details = error.errors(include_url=False, include_context=False, include_input=False)
    return error_response(400, f"invalid input: {describe(error)}", details=details)


def describe(error: ValidationError) -> str:
    """Where and why input does not fit its model, in one line (without the input itself)."""
    details = error.errors(include_url=False, include_context=False, include_input=False)
    return "; ".join(f"{'.'.join(map(str, d['loc'])) or 'body'}: {d['msg']}" for d in details)


async def _undecodable_body(error: ValueError) -> Response:
    """JSON or text that does not even parse (when a route decodes it itself rather than through pydantic)."""
    return error_response(400, f"malformed body: {error}")


async def _node_stopped(error: NodeStopped) -> Response:
    """The node hit a broken invariant and is stopping: nothing of this request's effect can be trusted."""
    response = error_response(503, "the node stopped on an internal error; try another node")
    response.headers["Connection"] = "close"
    return response


async def _unexpected_error(error: Exception) -> Response:
    """A bug: log it with its traceback and still answer JSON."""
    logger.error("unhandled error while serving a request", exc_info=error)
    return error_response(500, "internal error")


def install_error_handlers(app: Quart) -> None:
    """Make every error of ``app`` a JSON answer (the most specific handler wins, by exception class)."""
    app.register_error_handler(Answer, _answer)
    app.register_error_handler(NodeStopped, _node_stopped)
    app.register_error_handler(HTTPException, _http_exception)
    app.register_error_handler(ValidationError, _validation_error)
    app.register_error_handler(json.JSONDecodeError, _undecodable_body)
    app.register_error_handler(UnicodeDecodeError, _undecodable_body)
    app.register_error_handler(Exception, _unexpected_error)
