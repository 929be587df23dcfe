"""openapi.yaml is valid OpenAPI 3.0, the pydantic models say what it says, the Raft wire format round-trips,
and the docs and error handlers answer as the spec promises."""

from __future__ import annotations

import contextlib
import json
import logging
import random
import re
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError
from quart import request
from quart_trio import QuartTrio
from schemathesis.specs.openapi.definitions import OPENAPI_30_VALIDATOR

from raftkv import wire
from raftkv.api import models
from raftkv.api.app import create_app
from raftkv.api.binding import spec_operations
from raftkv.api.docs import SPEC
from raftkv.api.errors import error_response
from raftkv.config import NodeConfig
from raftkv.kv import KVStore
from raftkv.node import RaftNode
from raftkv.raft.membership import Membership
from raftkv.raft.types import (
    AnyMessage,
    AppendEntries,
    AppendEntriesReply,
    Entry,
    EntryKind,
    InstallSnapshot,
    RequestVote,
    RequestVoteReply,
    Role,
    Snapshot,
    TimeoutNow,
)
from raftkv.storage import MemoryStorage
from raftkv.transport import Transport

COMPONENTS: dict[str, Any] = SPEC["components"]["schemas"]
PARAMETER_MODELS = {
    models.ReadQuery,
    models.WriteQuery,
    models.ListQuery,
    models.KeyQuery,
    models.WatchQuery,
    models.EventsQuery,
    models.ClusterQuery,
    models.SnapshotChunkQuery,
}


# --- the document itself ----------------------------------------------------------------------------------


def test_spec_is_valid_openapi_3_0() -> None:
    assert SPEC["openapi"].startswith("3.0.")
    OPENAPI_30_VALIDATOR.validate(SPEC)


def test_the_validator_rejects_a_broken_spec() -> None:
    broken = {**SPEC, "paths": {"/x": {"get": {"responses": {"200": {"content": "not a map"}}}}}}
    with pytest.raises(ValueError):
        OPENAPI_30_VALIDATOR.validate(broken)


def _refs(node: object) -> list[str]:
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == "$ref"] + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def test_every_ref_resolves() -> None:
    for ref in _refs(SPEC):
        node: Any = SPEC
        for part in ref.removeprefix("#/").split("/"):
            assert part in node, ref
            node = node[part]


def _resolve(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = _resolve_pointer(node["$ref"])
    return node


def _resolve_pointer(ref: str) -> dict[str, Any]:
    node: Any = SPEC
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return dict(node)


def _responses() -> list[tuple[str, str, str, dict[str, Any]]]:
    return [
        (method, path, status, _resolve(response))
        for path, item in SPEC["paths"].items()
        for method, operation in item.items()
        if method != "parameters"
        for status, response in operation["responses"].items()
    ]


def test_every_error_answer_is_json_with_an_error_field() -> None:
    for method, path, status, response in _responses():
        if int(status) >= 300:
            schema = _resolve(response["content"]["application/json"]["schema"])
            assert "error" in schema["required"], (method, path, status)


def test_redirects_and_unavailable_answers_carry_their_headers() -> None:
    required_header = {"307": "Location", "503": "Retry-After"}
    for method, path, status, response in _responses():
        if status in required_header:
            header = _resolve(response["headers"][required_header[status]])
            assert header["required"] is True, (method, path, status)


def test_every_client_operation_can_answer_not_the_leader_and_unavailable() -> None:
    for path in ("/", "/kv", "/kv/{key}"):
        for method, operation in SPEC["paths"][path].items():
            if method != "parameters":
                assert {"307", "400", "503"} <= set(operation["responses"]), (method, path)


# --- models against component schemas ---------------------------------------------------------------------


def _spec_shape(schema: dict[str, Any]) -> dict[str, Any]:
    """An OpenAPI 3.0 property schema reduced to what the models must agree on."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        if "oneOf" in COMPONENTS[name]:  # a named union: the models it may be
            return {"types": {option["$ref"].rsplit("/", 1)[1] for option in COMPONENTS[name]["oneOf"]}}
        return {"types": {name}}
    if "allOf" in schema:
        (inner,) = schema["allOf"]
        shape = _spec_shape(inner)
    else:
        shape = {"types": {schema.get("type", "any")}}
        shape |= {
            k: schema[k] for k in ("enum", "minimum", "minLength", "maxLength", "format") if k in schema
        }
        if "items" in schema:
            shape["items"] = _spec_shape(schema["items"])
    if schema.get("nullable"):
        shape["types"] = shape["types"] | {"null"}
    return shape


def _model_shape(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """A pydantic (JSON Schema 2020-12) property schema reduced the same way."""
    if "$ref" in schema:
        target = defs[schema["$ref"].rsplit("/", 1)[1]]
        return {"types": {target.get("title", "any")}}
    if "oneOf" in schema:  # a discriminated union
        return {"types": set().union(*(_model_shape(option, defs)["types"] for option in schema["oneOf"]))}
    if "anyOf" in schema:
        shapes = [_model_shape(option, defs) for option in schema["anyOf"]]
        merged: dict[str, Any] = {}
        for shape in shapes:
            merged = {**shape, **merged, "types": merged.get("types", set()) | shape["types"]}
        return merged
    shape = {"types": {schema.get("type", "any")}}
    if "const" in schema:
        shape["enum"] = [schema["const"]]
    shape |= {k: schema[k] for k in ("enum", "minimum", "minLength", "maxLength", "format") if k in schema}
    if "items" in schema:
        shape["items"] = _model_shape(schema["items"], defs)
    return shape


def _body_models() -> list[type[BaseModel]]:
    public = [
        value
        for module in (models, wire)
        for name, value in vars(module).items()
        if isinstance(value, type)
        and issubclass(value, BaseModel)
        and value.__module__ == module.__name__
        and not name.startswith("_")
    ]
    return [
        m for m in public if m not in PARAMETER_MODELS and m not in (wire.RaftMessageModel, wire.StrictInput)
    ]


def _title(model: type[BaseModel]) -> str:
    return str(model.model_json_schema()["title"])


@pytest.mark.parametrize("model", _body_models(), ids=_title)
def test_model_agrees_with_its_component_schema(model: type[BaseModel]) -> None:
    schema = model.model_json_schema(mode="serialization")
    defs = schema.get("$defs", {})
    component = COMPONENTS[_title(model)]
    assert set(schema["properties"]) == set(component["properties"])
    assert set(schema.get("required", [])) == set(component.get("required", []))
    assert schema.get("additionalProperties", True) == component.get("additionalProperties", True)
    for name, prop in schema["properties"].items():
        assert _model_shape(prop, defs) == _spec_shape(component["properties"][name]), name


def test_every_object_component_has_a_model() -> None:
    objects = {name for name, schema in COMPONENTS.items() if schema.get("type") == "object"}
    assert objects == {_title(model) for model in _body_models()}


def test_role_enum_matches_the_core() -> None:
    assert COMPONENTS["Role"]["enum"] == [role.value for role in Role]


def test_the_raft_endpoints_take_the_messages_the_spec_says() -> None:
    expected = {m.tag(): f"#/components/schemas/{_title(m)}" for m in wire.RAFT_MODELS}
    assert COMPONENTS["RaftMessage"]["discriminator"]["mapping"] == expected
    stream = SPEC["paths"][wire.RAFT_STREAM_PATH]["post"]["requestBody"]["content"][wire.RAFT_STREAM_TYPE]
    batch = COMPONENTS["RaftMessageBatch"]["properties"]["messages"]
    assert stream["schema"] == batch["items"] == {"$ref": "#/components/schemas/RaftMessage"}
    assert batch["maxItems"] == wire.MAX_BATCH_MESSAGES


@pytest.mark.parametrize(
    ("model", "method", "path"),
    [
        (models.KeyQuery, "get", "/kv/{key}"),
        (models.WatchQuery, "get", "/watch"),
        (models.EventsQuery, "get", "/events"),
        (models.ReadQuery, "get", "/leases"),
        (models.ReadQuery, "get", "/"),
        (models.WriteQuery, "put", "/kv/{key}"),
        (models.WriteQuery, "delete", "/kv/{key}"),
        (models.ListQuery, "get", "/kv"),
        (models.ClusterQuery, "post", "/cluster/members"),
        (models.ClusterQuery, "delete", "/cluster/members/{member}"),
        (models.SnapshotChunkQuery, "post", "/raft/snapshot-chunk"),
    ],
)
def test_query_model_matches_the_operation_parameters(model: type[BaseModel], method: str, path: str) -> None:
    parameters = [_resolve(p) for p in SPEC["paths"][path][method].get("parameters", [])]
    query = {p["name"]: p["schema"].get("default") for p in parameters if p["in"] == "query"}
    assert query == {
        name: None if field.is_required() else field.default for name, field in model.model_fields.items()
    }


def test_spec_operations_lists_methods_paths_and_security() -> None:
    operations = {(op.method, op.path): op for op in spec_operations(SPEC)}
    assert operations["GET", "/kv/{key}"].schemes == {"clientToken"}
    assert operations["POST", "/raft/stream"].schemes == {"clusterToken"}
    assert operations["GET", "/healthz"].schemes == set()
    assert all(method.isupper() and path.startswith("/") for method, path in operations)


# --- client bodies and keys -------------------------------------------------------------------------------

FORM = "application/x-www-form-urlencoded"


@pytest.mark.parametrize(
    ("raw", "mimetype", "value"),
    [
        (b'{"value": "test"}', FORM, "test"),  # the seed's curl -d
        (b'{"value": {"a": [1, null]}}', "application/json", {"a": [1, None]}),
        (b"value=two%20words", FORM, "two words"),
        ("value=as%20text", FORM, "as text"),  # Quart types get_data() as str | bytes
        (b'{"value": null}', None, None),
    ],
)
def test_value_body_is_read_however_it_came(raw: bytes | str, mimetype: str | None, value: object) -> None:
    assert models.parse_value_body(raw, mimetype).value == value


@pytest.mark.parametrize(
    ("raw", "mimetype"),
    [(b"value=a&value=b", FORM), (b"value=a&other=b", FORM), (b"", FORM), (b"value=a", "application/json")],
)
def test_value_body_rejects_anything_else(raw: bytes, mimetype: str) -> None:
    with pytest.raises(ValidationError):
        models.parse_value_body(raw, mimetype)


def test_write_request_tells_null_prev_value_from_none() -> None:
    assert models.WriteRequest.model_validate_json(b'{"value": 1, "prev_value": null}').has_prev_value
    assert not models.WriteRequest.model_validate_json(b'{"value": 1}').has_prev_value


@pytest.mark.parametrize(
    "raw", ['{"value": 1, "prev_revision": "3"}', '{"value": 1, "prev_revision": -1}', "{}"]
)
def test_write_request_is_strict(raw: str) -> None:
    with pytest.raises(ValidationError):
        models.WriteRequest.model_validate_json(raw)


@pytest.mark.parametrize(
    ("query", "valid"),
    [
        ({"limit": "5", "redirect": "true"}, True),
        ({"limit": "0"}, False),
        ({"limit": "5.0"}, False),
        ({"redirect": "1"}, False),
        ({"consistency": "eventual"}, False),
    ],
)
def test_query_parsing_takes_only_what_openapi_serialises(query: dict[str, str], valid: bool) -> None:
    if valid:
        assert models.ListQuery.model_validate(query) == models.ListQuery(limit=5, redirect=True)
    else:
        with pytest.raises(ValidationError):
            models.ListQuery.model_validate(query)


def test_keys_are_limited_in_utf8_bytes() -> None:
    assert models.parse_key("k" * 1024) == "k" * 1024
    for bad in ("", "é" * 513, "\udc80"):
        with pytest.raises(ValidationError):
            models.parse_key(bad)


# --- Raft messages ----------------------------------------------------------------------------------------

naturals = st.integers(min_value=0, max_value=2**63 - 1)
node_ids = st.text(min_size=1, max_size=8)
addressing = {"term": naturals, "src": node_ids, "dst": node_ids}
messages: st.SearchStrategy[AnyMessage] = st.one_of(
    st.builds(
        RequestVote,
        **addressing,
        last_log_index=naturals,
        last_log_term=naturals,
        pre_vote=st.booleans(),
        transfer=st.booleans(),
    ),
    st.builds(RequestVoteReply, **addressing, granted=st.booleans(), pre_vote=st.booleans()),
    st.builds(
        lambda term, src, dst, prev_index, prev_term, data, config, commit, seq: AppendEntries(
            term=prev_term + term,
            src=src,
            dst=dst,
            prev_index=prev_index,
            prev_term=prev_term,
            entries=tuple(Entry(prev_index + 1 + i, prev_term + term, d) for i, d in enumerate(data))
            + (
                (Entry(prev_index + 1 + len(data), prev_term + term, config.encode(), EntryKind.MEMBERSHIP),)
                if config
                else ()
            ),
            commit=commit,
            seq=seq,
        ),
        **addressing,
        prev_index=naturals,
        prev_term=naturals,
        data=st.lists(st.none() | st.binary(), max_size=4),
        config=st.none()
        | st.builds(
            lambda voters: Membership.of(voters, {v: "http://x" for v in voters}),
            st.lists(node_ids, min_size=1, max_size=3),
        ),
        commit=naturals,
        seq=naturals,
    ),
    st.builds(
        AppendEntriesReply,
        **addressing,
        success=st.booleans(),
        match_index=naturals,
        conflict_index=naturals,
        conflict_term=naturals,
        seq=naturals,
    ),
    st.builds(
        InstallSnapshot,
        **addressing,
        seq=naturals,
        snapshot=st.builds(
            Snapshot,
            index=naturals,
            term=naturals,
            membership=st.builds(
                lambda voters, learners: Membership.of(
                    voters,
                    {n: f"http://{n}" for n in {*voters, *learners}},
                    learners=set(learners) - set(voters),
                ),
                st.lists(node_ids, min_size=1, max_size=3),
                st.lists(node_ids, max_size=2),
            ),
        ),
    ),
    st.builds(TimeoutNow, **addressing),
)


def test_entries_that_do_not_continue_the_log_are_rejected() -> None:
    gap = AppendEntries(2, "a", "b", 4, 1, (Entry(5, 2, None), Entry(7, 2, None)), 1)
    future_term = AppendEntries(2, "a", "b", 4, 1, (Entry(5, 3, None),), 1)
    for message in (gap, future_term):
        with pytest.raises(ValidationError):
            wire.parse_raft_message(wire.dump_raft_message(message))


@given(messages)
def test_raft_messages_round_trip_through_json(message: AnyMessage) -> None:
    body = wire.dump_raft_message(message)
    assert wire.parse_raft_message(body) == message
    assert wire.FrameReader().feed(wire.dump_raft_frames([message, message])) == [body, body]


@given(st.lists(messages, min_size=1, max_size=5), st.integers(min_value=1, max_value=200))
def test_a_stream_is_cut_into_its_lines_however_its_chunks_fall(batch: list[AnyMessage], size: int) -> None:
    body, reader = wire.dump_raft_frames(batch), wire.FrameReader()
    lines = [line for at in range(0, len(body), size) for line in reader.feed(body[at : at + size])]
    assert [wire.parse_raft_message(line) for line in lines] == batch


def test_a_line_that_grows_past_the_limit_is_refused() -> None:
    reader = wire.FrameReader(limit=10)
    assert reader.feed(b"0123456789\n01234") == [b"0123456789"]
    with pytest.raises(wire.FrameTooLarge):
        reader.feed(b"567890")


def test_message_bodies_follow_the_spec_names() -> None:
    body = json.loads(wire.dump_raft_message(AppendEntries(2, "a", "b", 1, 1, (Entry(2, 2, b"\x00"),), 1)))
    assert body["type"] == "append_entries"
    assert body["entries"] == [{"index": 2, "term": 2, "data": "AA==", "kind": "normal"}]


def test_from_core_refuses_another_message() -> None:
    with pytest.raises(TypeError):
        wire.AppendEntriesModel.from_core(TimeoutNow(1, "a", "b"))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
field_names = st.sampled_from(["term", "src", "dst", "entries", "snapshot", "granted", "seq", "data", "x"])
tags = st.sampled_from([m.tag() for m in wire.RAFT_MODELS])
garbage_messages = st.builds(
    lambda tag, rest: {"type": tag, **rest}, tags, st.dictionaries(field_names, json_values)
)


@given(st.binary() | garbage_messages.map(lambda d: json.dumps(d).encode()))
def test_garbage_is_a_validation_error_never_anything_else(raw: bytes) -> None:
    with contextlib.suppress(ValidationError):
        wire.parse_raft_message(raw)


# --- serving the docs and errors --------------------------------------------------------------------------


def node() -> RaftNode[KVStore]:
    return RaftNode(NodeConfig(id="n1"), MemoryStorage(), Transport(1.0), random.Random(0), KVStore)


@pytest.fixture
def app() -> QuartTrio:
    app = create_app(node())

    @app.post("/validate")
    async def validate() -> dict[str, Any]:
        return models.WriteRequest.model_validate_json(await request.get_data()).model_dump()

    @app.post("/decode")
    async def decode() -> dict[str, Any]:
        return {"decoded": json.loads(await request.get_data())}

    @app.get("/boom")
    async def boom() -> dict[str, Any]:
        raise RuntimeError("a bug")

    @app.get("/precondition")
    async def precondition() -> Any:
        return error_response(412, "no", current=None, headers={"X-Raft-Leader": "n1 http://x"})

    return app


def test_every_spec_operation_is_a_route_and_nothing_else_is() -> None:
    routes = {
        (method, re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule))
        for rule in create_app(node()).url_map.iter_rules()
        for method in rule.methods or ()
        if method not in {"HEAD", "OPTIONS"}
    }
    assert routes == {(op.method, op.path) for op in spec_operations(SPEC)}


async def test_serves_the_spec_as_yaml_and_json(app: QuartTrio) -> None:
    client = app.test_client()
    as_yaml = await client.get("/openapi.yaml")
    assert as_yaml.status_code == 200 and as_yaml.mimetype == "text/yaml"
    assert yaml.safe_load(await as_yaml.get_data(as_text=True)) == SPEC
    as_json = await client.get("/openapi.json")
    assert as_json.mimetype == "application/json"
    assert await as_json.get_json() == SPEC


async def test_docs_page_and_every_asset_it_names_are_served(app: QuartTrio) -> None:
    client = app.test_client()
    page = await client.get("/docs")
    html = await page.get_data(as_text=True)
    assert page.mimetype == "text/html"
    assert "validatorUrl: null" in html and 'url: "openapi.json"' in html
    assets = re.findall(r'(?:src|href)="(docs/[^"]+)"', html)
    declared = SPEC["paths"]["/docs/{asset}"]["get"]["parameters"][0]["schema"]["enum"]
    assert sorted(assets) == sorted(f"docs/{name}" for name in declared)
    for asset in assets:
        response = await client.get(f"/{asset}")
        assert response.status_code == 200, asset
        assert len(await response.get_data()) > 500, asset


async def test_unknown_asset_is_a_json_404(app: QuartTrio) -> None:
    response = await app.test_client().get("/docs/index.j2")
    assert response.status_code == 404
    assert "error" in await response.get_json()


async def test_unknown_path_is_a_json_404(app: QuartTrio) -> None:
    response = await app.test_client().get("/nowhere")
    assert response.status_code == 404 and response.mimetype == "application/json"
    assert isinstance((await response.get_json())["error"], str)


async def test_wrong_method_is_a_json_405_with_allow(app: QuartTrio) -> None:
    response = await app.test_client().delete("/openapi.json")
    assert response.status_code == 405 and response.mimetype == "application/json"
    assert "GET" in response.headers["Allow"]
    assert "error" in await response.get_json()


async def test_invalid_body_is_a_json_400_with_details(app: QuartTrio) -> None:
    response = await app.test_client().post("/validate", data=b'{"value": 1, "prev_revision": "x"}')
    body = await response.get_json()
    assert response.status_code == 400
    assert "prev_revision" in body["error"]
    assert body["details"][0]["loc"] == ["prev_revision"]


async def test_undecodable_json_is_a_400(app: QuartTrio) -> None:
    response = await app.test_client().post("/decode", data=b"{not json")
    assert response.status_code == 400
    assert (await response.get_json())["error"].startswith("malformed body")


async def test_a_bug_is_logged_and_answered_as_json_500(
    app: QuartTrio, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="raftkv.api.errors"):
        response = await app.test_client().get("/boom")
    assert response.status_code == 500
    assert (await response.get_json()) == {"error": "internal error"}
    assert "a bug" in caplog.text


async def test_error_response_carries_extra_fields_and_headers(app: QuartTrio) -> None:
    response = await app.test_client().get("/precondition")
    assert response.status_code == 412
    assert response.headers["X-Raft-Leader"] == "n1 http://x"
    assert await response.get_json() == {"error": "no", "current": None}
