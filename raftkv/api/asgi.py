"""One fix below the app, in the ASGI layer: the last part of each response is sent shielded from cancellation.

When a response goes out before its request's body arrived in full (a 408 for a body too slow, a 413 for one
too large), hypercorn closes the connection from inside that last ``send``. quart-trio, seeing the connection
go, cancels the request's task group -- the very task that is closing it -- so the close is abandoned half-way
and a client that never finishes its body keeps the socket open for good. Shielding that one call lets the
close complete; everything before it stays cancellable. (hypercorn shields its own socket writes the same way.)
"""

from __future__ import annotations

from typing import Any

import trio
from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, ASGISendEvent, Scope

ASGIApp = Any  # quart's asgi_app: ``async def app(scope, receive, send)``


class ShieldLastSend:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_last_shielded(message: ASGISendEvent) -> None:
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                with trio.CancelScope(shield=True):
                    await send(message)
            else:
                await send(message)

        await self.app(scope, receive, send_last_shielded)
