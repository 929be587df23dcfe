"""Handlers of the client API: the seed's single value and the keys (``/`` and ``/kv``)."""

from __future__ import annotations

from typing import Any, Final

from quart import Response, request

from raftkv import kv
from raftkv.api import models
from raftkv.api.binding import Operations
from raftkv.api.context import Api
from raftkv.api.errors import error_response, json_response

SEED_KEY: Final = "default"
"""``GET /`` and ``POST /`` read and write this key: the seed service's single value."""

operations = Operations[Api]()


@operations("getSeedValue")
async def get_seed_value(api: Api) -> Response:
    item = await api.read(api.query(models.ReadQuery), lambda store: store.get(SEED_KEY))
    return json_response(models.ValueBody(value=item.value if item else None))


@operations("setSeedValue")
async def set_seed_value(api: Api) -> Response:
    query = api.query(models.WriteQuery)
    body = models.parse_value_body(await request.get_data(as_text=False), request.mimetype or None)
    result = await api.write(query.redirect, kv.Put(key=SEED_KEY, value=body.value))
    if isinstance(result, kv.Ok):
        return json_response(models.ValueBody(value=result.value))
    return write_result_response(result)


@operations("listKeys")
async def list_keys(api: Api) -> Response:
    query = api.query(models.ListQuery)
    items, revision = await api.read(
        query, lambda store: (store.range(query.prefix, query.limit), store.revision)
    )
    return json_response(models.KeyValueList(items=[key_value_model(i) for i in items], revision=revision))


@operations("getKey")
async def get_key(api: Api, key: str) -> Response:
    key = models.parse_key(key)
    item = await api.read(api.query(models.ReadQuery), lambda store: store.get(key))
    if item is None:
        return error_response(404, f"key {key!r} not found")
    return json_response(key_value_model(item))


@operations("putKey")
async def put_key(api: Api, key: str) -> Response:
    key = models.parse_key(key)
    query = api.query(models.WriteQuery)
    body = models.WriteRequest.model_validate_json(await request.get_data(as_text=False))
    command = kv.Put(
        key=key,
        value=body.value,
        prev_value=body.prev_value if body.has_prev_value else kv.UNSET,
        prev_revision=body.prev_revision,
    )
    return write_result_response(await api.write(query.redirect, command))


operations("postKey")(put_key)


@operations("deleteKey")
async def delete_key(api: Api, key: str) -> Response:
    key = models.parse_key(key)
    query = api.query(models.WriteQuery)
    return write_result_response(await api.write(query.redirect, kv.Delete(key=key)))


# --- answers ------------------------------------------------------------------------------------------------


def key_value_model(item: kv.KeyValue) -> models.KeyValue:
    return models.KeyValue(key=item.key, value=item.value, revision=item.mod_revision)


def write_result_response(result: kv.WriteResult) -> Response:
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
