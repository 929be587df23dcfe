"""The HTTP face of a node: client API, operations API and Raft RPCs, all described by openapi.yaml.

``models`` holds the pydantic bodies, ``errors`` the JSON error answers, ``docs`` the spec and Swagger UI.
"""
