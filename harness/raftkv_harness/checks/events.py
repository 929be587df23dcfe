"""The change events the checks read: a watch stream's ``WatchEvent`` as a record."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal


@dataclass(frozen=True)
class ChangeEvent:
    revision: int
    type: Literal["put", "delete"]
    key: str
    value: Any = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ChangeEvent:
        return cls(int(data["revision"]), data["type"], str(data["key"]), data.get("value"))
