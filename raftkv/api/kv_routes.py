"""Handlers of the client API on keys: the seed's single value (``/``), the keys (``/kv``), transactions
(``/txn``) and watches (``/watch``, and ``/kv/{key}?wait=true``)."""

from __future__ import annotations

from typing import Any, Final

from quart import Response, request

from raftkv import kv
from raftkv.api import models, watch
from raftkv.api.binding import Operations
from raftkv.api.context import Api, idempotency_key
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
    command = kv.Put(key=SEED_KEY, value=body.value, idempotency_key=idempotency_key())
    result = await api.apply(query.redirect, command)
    if isinstance(result, kv.Ok):
        return json_response(models.ValueBody(value=result.value))
    return outcome_response(result)


@operations("listKeys")
async def list_keys(api: Api) -> Response:
    query = api.query(models.ListQuery)
    page, revision = await api.read(
        query, lambda store: (store.page(query.prefix, query.limit, query.start_after), store.revision)
    )
    items = [key_value_model(item) for item in page.items]
    return json_response(models.KeyValueList(items=items, revision=revision, next=page.next))


@operations("getKey")
async def get_key(api: Api, key: str) -> Response:
    key = models.parse_key(key)
    query = api.query(models.KeyQuery)
    if query.wait:
        return await watch.long_poll(api, key, query.after_revision, query.timeout)
    item = await api.read(query, lambda store: store.get(key))
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
        lease=body.lease,
        idempotency_key=idempotency_key(),
    )
    return outcome_response(await api.apply(query.redirect, command))


operations("postKey")(put_key)


@operations("deleteKey")
async def delete_key(api: Api, key: str) -> Response:
    key = models.parse_key(key)
    query = api.query(models.WriteQuery)
    command = kv.Delete(key=key, idempotency_key=idempotency_key())
    return outcome_response(await api.apply(query.redirect, command))


@operations("transaction")
async def transaction(api: Api) -> Response:
    query = api.query(models.WriteQuery)
    body = models.TxnRequest.model_validate_json(await request.get_data(as_text=False))
    try:
        command = kv.Txn(
            compare=tuple(map(txn_compare, body.compare)),
            success=tuple(map(txn_op, body.success)),
            failure=tuple(map(txn_op, body.failure)),
            idempotency_key=idempotency_key(),
        )
    except ValueError as e:  # the rules the model cannot state: one write per key and branch, the op limit
        return error_response(400, f"invalid transaction: {e}")
    result = await api.apply(query.redirect, command)
    if not isinstance(result, kv.TxnResult):
        return outcome_response(result)
    ops = command.success if result.succeeded else command.failure
    return json_response(
        models.TxnResponse(
            succeeded=result.succeeded,
            revision=result.revision,
            results=[txn_result_model(r, op) for r, op in zip(result.results, ops, strict=True)],
        ),
        exclude_none=True,
    )


@operations("watchPrefix")
async def watch_prefix(api: Api) -> Response:
    query = api.query(models.WatchQuery)
    last = request.headers.get("Last-Event-ID")
    last_seen = None if last is None else models.parse_revision(last)
    after = query.after_revision if query.after_revision is not None else last_seen
    return watch.stream(api, query.prefix, after, query.timeout)


# --- from the API's models to commands ----------------------------------------------------------------------


def txn_compare(compare: models.CompareValue | models.CompareRevision) -> kv.Compare:
    if isinstance(compare, models.CompareValue):
        return kv.CompareValue(key=compare.key, value=compare.value)
    return kv.CompareRevision(key=compare.key, revision=compare.revision)


def txn_op(op: models.TxnOperation) -> kv.TxnOp:
    match op:
        case models.TxnPutOperation(put=put):
            return kv.TxnPut(key=put.key, value=put.value, lease=put.lease)
        case models.TxnDeleteOperation(delete=target):
            return kv.TxnDelete(key=target.key)
        case models.TxnGetOperation(get=target):
            return kv.TxnGet(key=target.key)
    raise AssertionError(op)


# --- answers ------------------------------------------------------------------------------------------------


def key_value_model(item: kv.KeyValue) -> models.KeyValue:
    return models.KeyValue(key=item.key, value=item.value, revision=item.mod_revision)


def txn_result_model(result: kv.TxnOpResult, op: kv.TxnOp) -> models.TxnResult:
    match result:
        case kv.KeyValue(key=key, value=value, mod_revision=revision):
            found = True if isinstance(op, kv.TxnGet) else None
            return models.TxnResult(key=key, value=value, revision=revision, found=found)
        case kv.TxnDeleted(key=key, deleted=deleted):
            return models.TxnResult(key=key, deleted=deleted)
        case None:
            return models.TxnResult(key=op.key, found=False)
    raise AssertionError(result)


def outcome_response(result: kv.Outcome) -> Response:
    """The answer to a write of keys (a lease's outcomes are rendered by the lease routes)."""
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
    raise AssertionError(result)
