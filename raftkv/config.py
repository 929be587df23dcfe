"""Node settings, from command-line flags, ``RAFTKV_*`` environment variables or a TOML file (``--config``).

Precedence, highest first: flags, environment, file, defaults -- the usual order of etcd and most daemons, so a
shared config file can be overridden per process. pydantic-settings does the merging; this module says what
the settings are and which combinations cannot work, each refused with a message that names the setting.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Final, Self

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from raftkv.logs import LogFormat

ENV_PREFIX: Final = "RAFTKV_"
CLIENT_VARIABLES: Final = frozenset({"RAFTKV_ENDPOINTS"})  # read by the client commands, not by a node
MIB: Final = 1 << 20


class ConfigError(Exception):
    """Settings that cannot start a node; the message says which setting and why."""


def parse_peers(items: list[str] | str) -> dict[str, str]:
    """``["n2=http://host:8081", ...]`` (or the same joined by commas) -> ``{"n2": "http://host:8081"}``."""
    if isinstance(items, str):
        items = [item for item in items.split(",") if item]
    peers: dict[str, str] = {}
    for item in items:
        name, sep, url = item.partition("=")
        if not sep or not name or not url:
            raise ConfigError(f"--peer expects ID=URL, got {item!r}")
        peers[name] = url
    return peers


def _read_secret(path: Path) -> str:
    try:
        secret = path.read_text().strip()
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror}") from None
    if not secret:
        raise ValueError(f"{path} is empty")
    return secret


class NodeConfig(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    id: str = Field(min_length=1)
    listen: str = "127.0.0.1:8080"
    url: str | None = None  # how peers and clients reach this node; default http(s)://<listen>
    peers: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)  # id -> how to reach it
    initial_voters: Annotated[list[str] | None, NoDecode] = None  # founders of a fresh cluster (default: all)
    join: str | None = None  # a fresh data directory asks the cluster at this URL to add this node
    data_dir: Path = Path("data")
    tick_ms: int = Field(default=50, ge=1)
    heartbeat_ticks: int = Field(default=2, ge=1)
    election_ticks: int = Field(default=16, ge=2)
    request_timeout: float = Field(default=5.0, gt=0)  # a client call that cannot finish by then gets a 503
    rpc_timeout: float = Field(default=1.0, gt=0)  # one Raft message to one peer
    snapshot_entries: int = Field(default=10_000, ge=1)  # compact the log after this many applied entries
    max_inflight: int = Field(default=1, ge=1)  # batches in flight per follower; see README "Performance"
    # Security: see the README's Security section.
    token: SecretStr | None = None  # the cluster token: /raft/* and /cluster/* need "Bearer <token>"
    token_file: Path | None = None  # ... or read it from this file
    client_token: SecretStr | None = None  # when set, the client API needs "Bearer <client token>" too
    client_token_file: Path | None = None
    insecure: bool = False  # run peers without a cluster token (logged as a warning; /status says so)
    allow_fault_injection: bool = (
        False  # PUT /cluster/partition may cut this node off (raftkv cluster's dashboard)
    )
    cert_file: Path | None = None  # serve HTTPS with this certificate chain ...
    key_file: Path | None = None  # ... and this private key
    peer_ca_file: Path | None = None  # verify https peers against these CA certificates
    # Limits: each a 413 before anything is proposed.
    max_value_bytes: int = Field(default=1 * MIB, ge=1)  # one value, as JSON
    max_request_bytes: int = Field(default=2 * MIB, ge=1024)  # one client request body
    read_timeout: float = Field(default=10.0, gt=0)  # a request body must arrive within this
    log_level: str = "info"
    log_format: LogFormat = "text"  # or "json": one JSON object per line (see raftkv.logs)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, TomlConfigSettingsSource(settings_cls)

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"expected HOST:PORT, got {value!r}")
        return value

    @field_validator("peers", mode="before")
    @classmethod
    def _peer_list(cls, value: object) -> object:
        """``RAFTKV_PEERS=n2=http://...,n3=http://...``, as ``--peer`` takes them."""
        try:
            return parse_peers(value) if isinstance(value, str) else value
        except ConfigError as e:
            raise ValueError(str(e)) from None

    @field_validator("initial_voters", mode="before")
    @classmethod
    def _voter_list(cls, value: object) -> object:
        """``RAFTKV_INITIAL_VOTERS=n1,n2,n3``, as ``--initial-voters`` takes them."""
        return [item for item in value.split(",") if item] if isinstance(value, str) else value

    @field_validator("peers")
    @classmethod
    def _peer_urls(cls, value: dict[str, str]) -> dict[str, str]:
        for peer, url in value.items():
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"peer {peer}: expected an http:// or https:// URL, got {url!r}")
        return {peer: url.rstrip("/") for peer, url in value.items()}

    @model_validator(mode="before")
    @classmethod
    def _secrets_from_files(cls, data: Any) -> Any:
        """``--token-file`` and ``--client-token-file`` stand for the secret they hold."""
        if isinstance(data, dict):
            for name in ("token", "client_token"):
                path = data.get(f"{name}_file")
                if path is not None:
                    if data.get(name) is not None:
                        raise ValueError(f"give {name} or {name}_file, not both")
                    data = {**data, name: _read_secret(Path(path))}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.id in self.peers:
            raise ValueError(f"peers: {self.id!r} is this node's own id")
        if self.heartbeat_ticks >= self.election_ticks:
            raise ValueError("heartbeat_ticks must be smaller than election_ticks")
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        if self.initial_voters is not None and not set(self.initial_voters) <= set(self.members):
            unknown = sorted(set(self.initial_voters) - set(self.members))
            raise ValueError(f"initial_voters: {unknown} have no --peer (nor are this node)")
        if self.initial_voters is not None and self.id not in self.initial_voters:
            raise ValueError("initial_voters must include this node (a node that is not a founder joins)")
        if self.join is not None and self.initial_voters is not None:
            raise ValueError("a node either joins a cluster (join) or founds one (initial_voters), not both")
        if (self.peers or self.join) and self.token is None and not self.insecure:
            raise ValueError(
                "a node with peers needs the cluster token: give --token, --token-file or RAFTKV_TOKEN "
                "(or --insecure to run without one, which lets anyone who reaches a port rewrite the data)"
            )
        return self

    @property
    def scheme(self) -> str:
        return "https" if self.cert_file is not None else "http"

    @property
    def advertised_url(self) -> str:
        return (self.url or f"{self.scheme}://{self.listen}").rstrip("/")

    @property
    def members(self) -> dict[str, str]:
        """This node and every peer it knows how to reach, id -> URL."""
        return {self.id: self.advertised_url, **self.peers}

    @property
    def founders(self) -> dict[str, str]:
        """The voters of a fresh cluster this node helps found (none when it joins one): ``initial_voters``,
        or else this node and every peer."""
        if self.join is not None:
            return {}
        voters = self.initial_voters if self.initial_voters is not None else list(self.members)
        return {voter: self.members[voter] for voter in voters}

    @property
    def cluster_token(self) -> str | None:
        return self.token.get_secret_value() if self.token is not None else None

    @property
    def client_api_token(self) -> str | None:
        return self.client_token.get_secret_value() if self.client_token is not None else None

    def peer_tls(self) -> ssl.SSLContext | None:
        """How to verify https peers: against ``peer_ca_file`` when given (else the system's CAs)."""
        if self.peer_ca_file is None:
            return None
        return ssl.create_default_context(cafile=str(self.peer_ca_file))


def load_config(flags: Mapping[str, Any], config_file: Path | None = None) -> NodeConfig:
    """Merge file, environment and flags (flags given as None are absent) into a validated NodeConfig."""
    unknown = sorted(
        key
        for key in os.environ
        if key.startswith(ENV_PREFIX)
        and key not in CLIENT_VARIABLES
        and key[len(ENV_PREFIX) :].lower() not in NodeConfig.model_fields
    )
    if unknown:
        raise ConfigError(
            f"{', '.join(unknown)}: no such setting (known: {', '.join(NodeConfig.model_fields)})"
        )
    settings = NodeConfig if config_file is None else _with_file(config_file)
    try:
        return settings(**{k: v for k, v in flags.items() if v is not None and v != {}})
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(map(str, err['loc']))}: {err['msg']}" if err["loc"] else err["msg"]
            for err in e.errors()
        )
        raise ConfigError(problems) from e
    except (OSError, ValueError) as e:  # the TOML file: missing, unreadable or not TOML
        raise ConfigError(f"{config_file}: {e}") from e


def _with_file(path: Path) -> type[NodeConfig]:
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")

    class FromFile(NodeConfig):
        model_config = SettingsConfigDict(toml_file=path)

    return FromFile
