# One raftkv node. Build from the repository root:  docker build -t raftkv:0.1.0 .
# (.dockerignore lets in only what `pip install .` needs: no harness, tests or tools.)

FROM python:3.11-slim AS build
WORKDIR /src
# raftkv/openapi.yaml is a link to ../openapi.yaml, and pyproject.toml names README.md: both must come along.
COPY pyproject.toml README.md openapi.yaml ./
COPY raftkv ./raftkv
RUN python -m venv /venv && /venv/bin/pip install --no-cache-dir .

FROM python:3.11-slim
# A fixed uid/gid (10001), so that volume ownership and Kubernetes' runAsUser and fsGroup can name it.
# /data is created owned by it: a fresh named volume takes the ownership of the directory it is mounted on.
RUN useradd --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin raftkv \
    && mkdir /data && chown 10001:10001 /data
COPY --from=build /venv /venv
ENV PATH=/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    RAFTKV_LISTEN=0.0.0.0:8080 \
    RAFTKV_DATA_DIR=/data
USER 10001:10001
VOLUME /data
EXPOSE 8080
# Healthy = ready: the node knows a leader and has applied its commit index. The slim image has no curl;
# urlopen raises on a 503, so the check fails until then.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/readyz', timeout=2)"]
# Exec form: the node is PID 1 and gets SIGTERM itself (a leader hands over, then requests drain).
ENTRYPOINT ["raftkv", "serve"]
