"""``GET /dashboard``: a page that shows the cluster live, served from the files in ``raftkv/dashboard``
(package data: no CDN, no build step, works offline). The page itself reads every member's ``/events``."""

from __future__ import annotations

import functools
import importlib.resources
from typing import Final

from quart import Response

from raftkv.api.binding import Operations
from raftkv.api.errors import error_response

PAGE: Final = "index.html"
ASSET_MEDIA_TYPES: Final = {
    "dashboard.js": "application/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
}
"""The page's files (as declared for /dashboard/{asset})."""


@functools.cache
def _file(name: str) -> bytes:
    """Each file is read from the package once per process."""
    return (importlib.resources.files("raftkv") / "dashboard" / name).read_bytes()


operations = Operations[object]()
"""The dashboard's handlers: static files, so they serve any app."""


@operations("getDashboard")
async def get_dashboard(_: object) -> Response:
    return Response(
        _file(PAGE), content_type="text/html; charset=utf-8", headers={"Cache-Control": "no-cache"}
    )


@operations("getDashboardAsset")
async def get_dashboard_asset(_: object, asset: str) -> Response:
    media_type = ASSET_MEDIA_TYPES.get(asset)
    if media_type is None:
        return error_response(404, f"no such dashboard file: {asset}")
    return Response(_file(asset), content_type=media_type, headers={"Cache-Control": "no-cache"})
