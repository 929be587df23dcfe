"""A small HTTP/1.1 client for peer traffic, h11 on a Trio stream: request-answer exchanges on one keep-alive
connection (``PeerConnection``, for snapshot chunks), and one long request whose body streams for as long as
the connection lives (``PeerStream``, the Raft message channel).

Used instead of httpx on the peer paths: a sender needs one connection and the status (and, for snapshot
chunks, the small JSON body) of each answer, and httpx's pool machinery cost more CPU per message than
everything else on the leader's send path (measured in the README's Performance section).
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import h11
import trio

DEFAULT_PORTS = {"http": 80, "https": 443}
RECEIVE_BYTES = 65536  # one read of an answer: a status line, a few headers and a small body fit many times
ANSWER_EXCERPT = 300  # bytes of a stream's answer kept for the log: the JSON error says why it ended
SECONDS_PER_MIB = 1.0  # extra time a large body gets on top of the timeout, per MiB


class PeerError(Exception):
    """A request did not complete: no connection, a timeout, a broken answer."""


class _Peer:
    """Where a peer is and how to speak to it: its address, TLS, path prefix and the headers of every request."""

    def __init__(self, url: str, timeout: float, headers: dict[str, str], tls: ssl.SSLContext | None) -> None:
        parts = urlsplit(url)
        if parts.scheme not in DEFAULT_PORTS or parts.hostname is None:
            raise ValueError(f"peer URL must be http(s)://HOST[:PORT], got {url!r}")
        self.host, self.port = parts.hostname, parts.port or DEFAULT_PORTS[parts.scheme]
        self.tls = (tls or ssl.create_default_context()) if parts.scheme == "https" else None
        self.prefix = parts.path.rstrip("/")
        self.timeout = timeout
        self.headers = [("Host", parts.netloc), *headers.items()]

    async def connect(self) -> trio.abc.Stream:
        if self.tls is None:
            return await trio.open_tcp_stream(self.host, self.port)
        return await trio.open_ssl_over_tcp_stream(self.host, self.port, ssl_context=self.tls)


class PeerStream(_Peer):
    """One POST whose chunked body carries frames for as long as the connection lives: no request handling
    per message at either end. The peer answers only when it ends the stream (shutting down, or refusing a
    frame or the token); ``run`` returns the reason then, or when sending a frame fails or times out."""

    async def run(self, target: str, content_type: str, next_chunk: Callable[[], Awaitable[bytes]]) -> str:
        """Open the stream and send what each call of ``next_chunk`` gives as one chunk, until the stream
        breaks; the reason."""
        try:
            with trio.fail_after(self.timeout):
                stream = await self.connect()
        except (OSError, trio.TooSlowError) as e:
            return f"cannot connect: {type(e).__name__}: {e}"
        http = h11.Connection(h11.CLIENT)
        headers = [*self.headers, ("Content-Type", content_type), ("Transfer-Encoding", "chunked")]
        reason = "the stream ended"
        async with stream, trio.open_nursery() as nursery:

            async def watch_answer() -> None:
                """Whatever the peer says on this connection ends the stream (it only answers to end it)."""
                nonlocal reason
                reason = await _answer_of(stream, http)
                nursery.cancel_scope.cancel()

            try:
                await stream.send_all(
                    http.send(h11.Request(method="POST", target=self.prefix + target, headers=headers))
                )
                nursery.start_soon(watch_answer)
                while True:
                    chunk = await next_chunk()
                    with trio.fail_after(self.timeout + SECONDS_PER_MIB * len(chunk) / (1 << 20)):
                        await stream.send_all(http.send(h11.Data(data=chunk)))
            except (OSError, trio.TooSlowError, trio.BrokenResourceError, h11.ProtocolError) as e:
                reason = f"{type(e).__name__}: {e}"
            nursery.cancel_scope.cancel()
        return reason


async def _answer_of(stream: trio.abc.Stream, http: h11.Connection) -> str:
    """Read the peer's answer to a streaming request: what it said, or how the connection ended."""
    status: int | None = None
    body = bytearray()
    try:
        while True:
            event = http.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(RECEIVE_BYTES)
                if not data:
                    break
                http.receive_data(bytes(data))
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                body += event.data[: ANSWER_EXCERPT - len(body)]
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                break
    except (OSError, trio.BrokenResourceError, h11.ProtocolError) as e:
        return f"{type(e).__name__}: {e}"
    if status is None:
        return "the peer closed the connection"
    return f"the peer answered {status}: {bytes(body)!r}"


class PeerConnection(_Peer):
    """One keep-alive HTTP/1.1 connection to a peer, reopened on demand after any failure."""

    def __init__(self, url: str, timeout: float, headers: dict[str, str], tls: ssl.SSLContext | None) -> None:
        super().__init__(url, timeout, headers, tls)
        self.stream: trio.abc.Stream | None = None
        self.http = h11.Connection(h11.CLIENT)

    async def post(
        self, target: str, body: bytes, content_type: str = "application/json"
    ) -> tuple[int, bytes]:
        """POST ``body`` to ``target`` (path and query) and return the answer's status and body; raises
        PeerError (and drops the connection)."""
        try:
            with trio.fail_after(self.timeout + SECONDS_PER_MIB * len(body) / (1 << 20)):
                return await self._exchange(target, body, content_type)
        except (OSError, trio.TooSlowError, trio.BrokenResourceError, h11.ProtocolError) as e:
            await self.close()
            raise PeerError(f"{type(e).__name__}: {e}") from e

    async def _exchange(self, target: str, body: bytes, content_type: str) -> tuple[int, bytes]:
        if self.stream is None:
            self.stream = await self.connect()
            self.http = h11.Connection(h11.CLIENT)
        headers = [*self.headers, ("Content-Type", content_type), ("Content-Length", str(len(body)))]
        request = h11.Request(method="POST", target=self.prefix + target, headers=headers)
        await self.stream.send_all(
            self.http.send(request) + self.http.send(h11.Data(data=body)) + self.http.send(h11.EndOfMessage())
        )
        status, answer = 0, bytearray()
        while True:
            event = self.http.next_event()
            if event is h11.NEED_DATA:
                self.http.receive_data(bytes(await self.stream.receive_some(RECEIVE_BYTES)))
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                answer += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                raise trio.BrokenResourceError("the peer closed the connection")
        if self.http.our_state is h11.DONE and self.http.their_state is h11.DONE:
            self.http.start_next_cycle()
        else:
            await self.close()  # the peer asked to close (e.g. it is shutting down)
        return status, bytes(answer)

    async def close(self) -> None:
        if self.stream is not None:
            stream, self.stream = self.stream, None
            with trio.CancelScope(shield=True):
                await stream.aclose()
