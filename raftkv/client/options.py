"""The settings both clients share: tokens, TLS and deadlines."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

CLUSTER_PATHS = ("/cluster/", "/raft/")


@dataclass(frozen=True)
class ClientOptions:
    token: str | None = None  # the cluster token, sent on /cluster/* calls
    client_token: str | None = None  # the client token, sent on every other call (when the cluster has one)
    ca_file: Path | None = None  # verify https members against this CA
    request_timeout: float = 10.0  # one attempt
    deadline: float = 30.0  # all attempts of one call together

    def verify(self) -> ssl.SSLContext | bool:
        return ssl.create_default_context(cafile=str(self.ca_file)) if self.ca_file else True

    def headers(self, path: str) -> dict[str, str]:
        """The Authorization a call to ``path`` needs: the cluster token for /cluster/*, else the client's."""
        cluster = path.startswith(CLUSTER_PATHS)
        token = self.token if cluster else self.client_token
        return {"Authorization": f"Bearer {token}"} if token else {}
