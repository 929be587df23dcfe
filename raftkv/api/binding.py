"""Routes bound from openapi.yaml: every operation's ``operationId`` names the handler that serves it.

The spec is the single source of the routes. ``bind`` walks its operations and registers, for each, the handler
an ``Operations`` registry holds under that ``operationId``, guarded by the operation's ``security``. An
operation without a handler, or a handler without an operation, stops the app at start-up with a message that
names it, so the app and its contract cannot drift apart.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar

from quart import Quart, Response

HTTP_METHODS: Final = frozenset({"get", "put", "post", "delete", "patch", "head", "options", "trace"})

C = TypeVar("C")
C_contra = TypeVar("C_contra", contravariant=True)
Handler = Callable[..., Awaitable[Response]]
"""``async def handler(context, **path_parameters) -> Response``."""

Guard = Callable[[frozenset[str]], Awaitable[Response | None]]
"""Checks a request against the security schemes its operation names: None to let it through, or the
refusal to answer instead."""

_PATH_PARAMETER: Final = re.compile(r"\{(\w+)\}")
ANY_TEXT_PARAMETERS: Final = frozenset({"key"})
"""Path parameters that may hold any text, slashes and newlines included (keys); others are one segment."""


class SpecBindingError(Exception):
    """The app's handlers and the spec's operations do not match one to one."""


class Operations(Generic[C_contra]):
    """Handlers by ``operationId``, each taking a context of type ``C_contra`` as its first argument (so a
    registry whose handlers take any ``object`` serves an app of any context)."""

    def __init__(self) -> None:
        self.handlers: dict[str, Callable[..., Awaitable[Response]]] = {}

    def __call__(self, operation_id: str) -> Callable[[Handler], Handler]:
        """Decorator: ``@operations("getKey")`` over ``async def get_key(context, key) -> Response``."""

        def register(handler: Handler) -> Handler:
            if operation_id in self.handlers:
                raise SpecBindingError(f"two handlers for operation {operation_id!r}")
            self.handlers[operation_id] = handler
            return handler

        return register


@dataclass(frozen=True, slots=True)
class Operation:
    """One operation of the spec, as the binding needs it."""

    operation_id: str
    method: str
    path: str
    schemes: frozenset[str]  # the security schemes it names (empty: open to anyone)

    @property
    def rule(self) -> str:
        """The path as a werkzeug rule: ``/kv/{key}`` becomes ``/kv/<key:key>``."""
        return _PATH_PARAMETER.sub(
            lambda m: f"<key:{m[1]}>" if m[1] in ANY_TEXT_PARAMETERS else f"<{m[1]}>", self.path
        )


def spec_operations(spec: Mapping[str, Any]) -> list[Operation]:
    """Every operation in ``spec``; raises SpecBindingError for one without an ``operationId``."""
    default_security = spec.get("security", [])
    operations = []
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method not in HTTP_METHODS:
                continue
            if "operationId" not in operation:
                raise SpecBindingError(f"{method.upper()} {path} has no operationId")
            security = operation.get("security", default_security)
            schemes = frozenset(name for requirement in security for name in requirement)
            operations.append(Operation(operation["operationId"], method.upper(), path, schemes))
    return operations


def bind(
    app: Quart, spec: Mapping[str, Any], context: C, registries: Iterable[Operations[C]], guard: Guard
) -> None:
    """Register a route on ``app`` for every operation in ``spec``, served by its handler with ``context``."""
    handlers: dict[str, Handler] = {}
    for registry in registries:
        for operation_id, handler in registry.handlers.items():
            if operation_id in handlers:
                raise SpecBindingError(f"two handlers for operation {operation_id!r}")
            handlers[operation_id] = handler
    operations = spec_operations(spec)
    missing = sorted({op.operation_id for op in operations} - handlers.keys())
    if missing:
        raise SpecBindingError(f"operations in the spec without a handler: {', '.join(missing)}")
    unbound = sorted(handlers.keys() - {op.operation_id for op in operations})
    if unbound:
        raise SpecBindingError(f"handlers for operations the spec does not have: {', '.join(unbound)}")
    for operation in operations:
        view = _view(handlers[operation.operation_id], context, operation.schemes, guard)
        app.add_url_rule(operation.rule, operation.operation_id, view, methods=[operation.method])


def _view(handler: Handler, context: C, schemes: frozenset[str], guard: Guard) -> Handler:
    async def view(**parameters: Any) -> Response:
        refusal = await guard(schemes)
        if refusal is not None:
            return refusal
        return await handler(context, **parameters)

    view.__name__ = handler.__name__
    return view
