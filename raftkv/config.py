"""Node settings, from command-line flags, a TOML file (``--config``) or ``RAFTKV_*`` environment variables.

Precedence, highest first: flags, environment, file, defaults -- the usual order of etcd and most daemons, so a
shared config file can be overridden per process.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class ConfigError(Exception):
    """Settings that cannot start a node; the message says which setting and why."""


class NodeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1)
    listen: str = "127.0.0.1:8080"
    url: str | None = None  # how peers and clients reach this node; default http://<listen>
    peers: dict[str, str] = Field(default_factory=dict)  # id -> base URL
    data_dir: Path = Path("data")
    tick_ms: int = Field(default=50, ge=1)
    heartbeat_ticks: int = Field(default=2, ge=1)
    election_ticks: int = Field(default=16, ge=2)
    request_timeout: float = Field(default=5.0, gt=0)  # a client call that cannot finish by then gets a 503
    rpc_timeout: float = Field(default=1.0, gt=0)  # one Raft message to one peer
    snapshot_entries: int = Field(default=10_000, ge=1)  # compact the log after this many applied entries
    max_inflight: int = Field(default=1, ge=1)  # batches in flight per follower; see README "Performance"
    token: str | None = None  # when set, Raft RPCs need "Authorization: Bearer <token>"
    test_power_loss: bool = False  # test only: SIGUSR1 drops unsynced writes and exits, like a power cut
    test_unsafe_local_reads: bool = (
        False  # test only: serve reads without ReadIndex (a deliberately broken node)
    )
    log_level: str = "info"

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"expected HOST:PORT, got {value!r}")
        return value

    @field_validator("peers")
    @classmethod
    def _peer_urls(cls, value: dict[str, str]) -> dict[str, str]:
        for peer, url in value.items():
            if not url.startswith("http://"):  # the peer transport speaks plain HTTP/1.1
                raise ValueError(f"peer {peer}: expected an http:// URL, got {url!r}")
        return {peer: url.rstrip("/") for peer, url in value.items()}

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.id in self.peers:
            raise ValueError(f"peers: {self.id!r} is this node's own id")
        if self.heartbeat_ticks >= self.election_ticks:
            raise ValueError("heartbeat_ticks must be smaller than election_ticks")
        return self

    @property
    def advertised_url(self) -> str:
        return (self.url or f"http://{self.listen}").rstrip("/")

    @property
    def members(self) -> dict[str, str]:
        """Every voter, this node included, id -> URL."""
        return {self.id: self.advertised_url, **self.peers}


ENV_PREFIX = "RAFTKV_"


def parse_peers(items: list[str]) -> dict[str, str]:
    """``["n2=http://host:8081", ...]`` -> ``{"n2": "http://host:8081"}``."""
    peers: dict[str, str] = {}
    for item in items:
        name, sep, url = item.partition("=")
        if not sep or not name or not url:
            raise ConfigError(f"--peer expects ID=URL, got {item!r}")
        peers[name] = url
    return peers


def _from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    for key, value in environ.items():
        if not key.startswith(ENV_PREFIX):
            continue
        name = key[len(ENV_PREFIX) :].lower()
        if name not in NodeConfig.model_fields:
            raise ConfigError(f"{key}: no such setting (known: {', '.join(NodeConfig.model_fields)})")
        settings[name] = parse_peers(value.split(",")) if name == "peers" else value
    return settings


def load_config(
    flags: Mapping[str, Any], config_file: Path | None = None, environ: Mapping[str, str] = os.environ
) -> NodeConfig:
    """Merge file, environment and flags (flags given as None are absent) into a validated NodeConfig."""
    settings: dict[str, Any] = {}
    if config_file is not None:
        try:
            settings.update(tomllib.loads(config_file.read_text()))
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise ConfigError(f"{config_file}: {e}") from e
    settings.update(_from_env(environ))
    settings.update({k: v for k, v in flags.items() if v is not None and v != {}})
    try:
        return NodeConfig(**settings)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(map(str, err['loc']))}: {err['msg']}" if err["loc"] else err["msg"]
            for err in e.errors()
        )
        raise ConfigError(problems) from e
