"""The API's own description: ``/openapi.yaml``, ``/openapi.json`` and Swagger UI at ``/docs``.

The master copy of the spec is ``openapi.yaml`` at the repository root; ``raftkv/openapi.yaml`` is a symlink
to it, so the package reads it through ``importlib.resources`` wherever it runs from. It is read and parsed
once, at import. Swagger UI comes from the ``swagger-ui-bundle`` package and makes no outside request.
"""

from __future__ import annotations

import functools
import importlib.resources
import json
from typing import Any, Final

import yaml
from quart import Response
from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped]

from raftkv.api.binding import Operations
from raftkv.api.errors import JSON_MEDIA_TYPE, error_response

SPEC_YAML: Final = (importlib.resources.files("raftkv") / "openapi.yaml").read_text(encoding="utf-8")
SPEC: Final[dict[str, Any]] = yaml.safe_load(SPEC_YAML)
_SPEC_JSON: Final = json.dumps(SPEC)

# The only bundled files the page needs, with their media types (as declared for /docs/{asset}).
_ASSET_MEDIA_TYPES: Final = {
    "swagger-ui.css": "text/css",
    "swagger-ui-bundle.js": "application/javascript",
    "swagger-ui-standalone-preset.js": "application/javascript",
    "favicon-32x32.png": "image/png",
    "favicon-16x16.png": "image/png",
}
_ASSET_CACHE_CONTROL: Final = "public, max-age=86400"

# URLs are relative to /docs, so the page also works behind a path prefix. validatorUrl: null keeps the
# page from calling validator.swagger.io.
_DOCS_PAGE: Final = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="UTF-8">
  <title>raftkv API</title>
  <link rel="stylesheet" type="text/css" href="docs/swagger-ui.css">
  <link rel="icon" type="image/png" href="docs/favicon-32x32.png" sizes="32x32">
  <link rel="icon" type="image/png" href="docs/favicon-16x16.png" sizes="16x16">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="docs/swagger-ui-bundle.js" charset="UTF-8"></script>
  <script src="docs/swagger-ui-standalone-preset.js" charset="UTF-8"></script>
  <script>
    window.onload = function () {
      window.ui = SwaggerUIBundle({
        url: "openapi.json",
        dom_id: "#swagger-ui",
        deepLinking: true,
        validatorUrl: null,
        presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
        plugins: [SwaggerUIBundle.plugins.DownloadUrl],
        layout: "StandaloneLayout",
      });
    };
  </script>
</body>
</html>
"""


@functools.cache
def _asset_bytes(name: str) -> bytes:
    """Each asset is read from the bundle once per process (the largest is about 1 MB)."""
    data: bytes = (swagger_ui_path / name).read_bytes()
    return data


operations = Operations[object]()
"""The documentation handlers: they need no context, so they serve any app."""


@operations("getSpecYaml")
async def get_spec_yaml(_: object) -> Response:
    return Response(SPEC_YAML, content_type="text/yaml; charset=utf-8")


@operations("getSpecJson")
async def get_spec_json(_: object) -> Response:
    return Response(_SPEC_JSON, content_type=JSON_MEDIA_TYPE)


@operations("getDocs")
async def get_docs(_: object) -> Response:
    return Response(_DOCS_PAGE, content_type="text/html; charset=utf-8")


@operations("getDocsAsset")
async def get_docs_asset(_: object, asset: str) -> Response:
    media_type = _ASSET_MEDIA_TYPES.get(asset)
    if media_type is None:
        return error_response(404, f"no such documentation asset: {asset}")
    headers = {"Cache-Control": _ASSET_CACHE_CONTROL}
    return Response(_asset_bytes(asset), content_type=media_type, headers=headers)
