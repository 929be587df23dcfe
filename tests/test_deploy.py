"""The deployment files, checked offline: no image can be built here, so each file is validated against its
schema, checked against the others (ports, paths, names, the uid), and the settings each one gives a node are
run through raftkv's own command line and config parser, so that a renamed flag or variable fails here."""

from __future__ import annotations

import http.server
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import tomllib
import zipfile
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from dockerfile_parse import DockerfileParser
from packaging.specifiers import SpecifierSet

from raftkv.config import NodeConfig

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "deploy" / "compose.yaml"
K8S = ROOT / "deploy" / "k8s"
K8S_VERSIONS = ("1.30", "1.37")  # an older and the newest release kubernetes-validate has schemas for
NAMESPACE = "raftkv-test"
TOKEN = "test-cluster-token"
# The longest a stopping node may take: a leader's hand-over waits up to request_timeout, then the server
# drains in-flight requests for as long again (hypercorn's graceful_timeout).
LONGEST_STOP = 2 * NodeConfig.model_fields["request_timeout"].default

# Stands in for the image's `raftkv`: the real command line and config parser, then a dump of the settings
# instead of serving.
FAKE_RAFTKV = """#!{python}
import json, os, types
from raftkv import cli

def dump(serve, config):
    with open({out!r}, "w") as f:
        json.dump({{"pid": os.getpid(), "id": config.id, "listen": config.listen, "url": config.advertised_url,
                   "data_dir": str(config.data_dir), "members": config.members, "founders": config.founders,
                   "token": config.cluster_token}}, f)

cli.trio = types.SimpleNamespace(run=dump)
cli.main()
"""


def api_paths() -> set[str]:
    return set(yaml.safe_load((ROOT / "openapi.yaml").read_text())["paths"])


def run_node(command: list[str], env: dict[str, str], tmp_path: Path) -> dict[str, Any]:
    """Run ``command`` as the container would, with ``env`` only, and the stand-in raftkv on PATH; returns
    the settings the real parser made of it. The stand-in must be the process started (an exec, not a child
    of a shell), or SIGTERM would not reach the node."""
    bin_dir, out = tmp_path / "bin", tmp_path / "settings.json"
    bin_dir.mkdir()
    fake = bin_dir / "raftkv"
    fake.write_text(FAKE_RAFTKV.format(python=sys.executable, out=str(out)))
    fake.chmod(0o755)
    env = {**env, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, f"the node refused its settings: {stderr}"
    settings: dict[str, Any] = json.loads(out.read_text())
    assert settings["pid"] == process.pid, "the command does not exec raftkv"
    return settings


# --- the Dockerfile and .dockerignore ---


@cache
def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile's instructions as (INSTRUCTION, value), one list per stage."""
    stages: list[list[tuple[str, str]]] = []
    for item in DockerfileParser(path=str(DOCKERFILE)).structure:
        if item["instruction"] == "FROM":
            stages.append([])
        if item["instruction"] != "COMMENT":
            stages[-1].append((item["instruction"], item["value"]))
    return stages


def instruction(name: str, stage: int = -1) -> list[str]:
    return [value for instr, value in dockerfile_stages()[stage] if instr == name]


def only(name: str, stage: int = -1) -> str:
    (value,) = instruction(name, stage)
    return value


def image_env() -> dict[str, str]:
    """The final stage's ENV, but PATH: a test puts its stand-in raftkv first on its own PATH."""
    envs = dict(DockerfileParser(path=str(DOCKERFILE)).envs)
    return {name: value for name, value in envs.items() if name != "PATH"}


def image_user() -> tuple[int, int]:
    uid, _, gid = only("USER").partition(":")
    return int(uid), int(gid or uid)


def image_port() -> int:
    return int(only("EXPOSE"))


def image_volume() -> str:
    value = only("VOLUME")
    volumes = json.loads(value) if value.startswith("[") else value.split()
    (volume,) = volumes
    return str(volume)


def test_the_image_runs_a_supported_python_as_a_fixed_non_root_user() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requires = SpecifierSet(project["requires-python"])
    for stage in range(len(dockerfile_stages())):
        image = only("FROM", stage).split()[0]
        version = re.fullmatch(r"python:(\d+\.\d+)-slim", image)
        assert version is not None, f"not a slim Python image: {image}"
        assert version[1] in requires
    uid, gid = image_user()
    assert uid != 0 and gid != 0
    assert any(f"useradd --uid {uid} " in run for run in instruction("RUN"))


def test_the_image_keeps_its_data_on_a_volume_the_user_owns() -> None:
    uid, gid = image_user()
    volume = image_volume()
    assert image_env()["RAFTKV_DATA_DIR"] == volume
    assert any(re.search(rf"chown {uid}:{gid} {re.escape(volume)}\b", run) for run in instruction("RUN"))


def test_the_image_listens_on_its_exposed_port_and_checks_readyz() -> None:
    host, _, port = image_env()["RAFTKV_LISTEN"].rpartition(":")
    assert (host, int(port)) == ("0.0.0.0", image_port())
    options, _, command = only("HEALTHCHECK").partition("CMD ")
    argv = json.loads(command)
    assert argv[0] == "python"  # the slim image has no curl
    assert f"http://127.0.0.1:{image_port()}/readyz" in argv[-1] and "/readyz" in api_paths()
    assert "--start-period=" in options


class _Readiness(http.server.BaseHTTPRequestHandler):
    status = 503

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/readyz" else 404)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.mark.parametrize(("status", "healthy"), [(200, True), (503, False)])
def test_the_health_check_passes_only_while_the_node_is_ready(status: int, healthy: bool) -> None:
    handler = type("Handler", (_Readiness,), {"status": status})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        port = server.server_address[1]
        argv = json.loads(only("HEALTHCHECK").partition("CMD ")[2])
        argv = [sys.executable, *(a.replace(f":{image_port()}/", f":{port}/") for a in argv[1:])]
        assert (subprocess.run(argv, capture_output=True, timeout=30).returncode == 0) is healthy
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_the_entrypoint_is_raftkv_serve_in_exec_form() -> None:
    assert json.loads(only("ENTRYPOINT")) == ["raftkv", "serve"]  # exec form: SIGTERM reaches the node


GLOB = {"**/": "(.*/)?", "**": ".*", "*": "[^/]*"}  # .dockerignore's wildcards as regular expressions


def dockerignore_excludes(path: str) -> bool:
    """Whether the build context leaves ``path`` out, as Docker reads .dockerignore: the last pattern that
    matches the path or one of its parent directories decides; ``!`` lets back in."""
    excluded = False
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = os.path.normpath(pattern.removeprefix("!")).lstrip("/")
        regex = "".join(GLOB.get(part, re.escape(part)) for part in re.split(r"(\*\*/|\*\*|\*)", pattern))
        parts = path.split("/")
        if any(re.fullmatch(regex, "/".join(parts[:n])) for n in range(1, len(parts) + 1)):
            excluded = not negate
    return excluded


def build_context() -> set[str]:
    """The tracked files, and some a working copy has besides, that .dockerignore lets into the context."""
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True)
    extra = [
        ".venv/bin/python",
        ".raftkv/n1/log",
        "raftkv/__pycache__/cli.cpython-311.pyc",
        "raftkv.egg-info/PKG-INFO",
        "deploy/raftkv-token",
    ]
    return {path for path in [*tracked.stdout.split(), *extra] if not dockerignore_excludes(path)}


def copies(stage: int) -> list[tuple[list[str], str]]:
    """A stage's COPY instructions from the build context, as (sources, destination)."""
    result = []
    for value in instruction("COPY", stage):
        *sources, dest = shlex.split(value)
        assert not any(s.startswith("--") for s in sources), f"COPY {value}: only plain copies"
        result.append((sources, dest))
    return result


def test_the_build_context_holds_the_package_and_nothing_else() -> None:
    context = build_context()
    sources = {source for sources, _ in copies(0) for source in sources}
    needed = {"pyproject.toml", "README.md", "openapi.yaml", "raftkv"}
    assert {path.split("/")[0] for path in context} == sources == needed
    assert "raftkv/cli.py" in context and "raftkv/__pycache__/cli.cpython-311.pyc" not in context
    assert [value.split()[0] for value in instruction("COPY")] == ["--from=build"]  # the final stage


def test_what_the_build_stage_copies_makes_a_complete_wheel(tmp_path: Path) -> None:
    """Copy the context as the build stage does (links stay links, as with COPY), then build the wheel."""
    context, src = build_context(), tmp_path / "src"
    workdir = Path(only("WORKDIR", 0))
    for sources, dest in copies(0):
        target = src / (workdir / dest).relative_to("/")
        for source in sources:
            for path in sorted(p for p in context if p == source or p.startswith(f"{source}/")):
                to = target / Path(path).relative_to(source) if path != source else target / Path(path).name
                to.parent.mkdir(parents=True, exist_ok=True)
                if (ROOT / path).is_symlink():
                    to.symlink_to(os.readlink(ROOT / path))
                else:
                    shutil.copyfile(ROOT / path, to)
    (run,) = [run for run in instruction("RUN", 0) if "pip install" in run]
    assert "--no-cache-dir ." in run
    wheel_dir = tmp_path / "wheel"
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    built = subprocess.run(
        [*pip_wheel, "-w", str(wheel_dir), str(src / workdir.relative_to("/"))],
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = wheel_dir.glob("raftkv-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        assert archive.read("raftkv/openapi.yaml") == (ROOT / "openapi.yaml").read_bytes()
        assert "raftkv/raft/core.py" in archive.namelist()


# --- deploy/compose.yaml ---


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def seconds(duration: str) -> float:
    """A compose duration such as "30s" or "1m30s"."""
    units = {"h": 3600, "m": 60, "s": 1}
    parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", duration)
    assert parts is not None and duration, f"not a duration: {duration!r}"
    return sum(int(n) * units[u] for n, u in zip(parts.groups(), "hms", strict=True) if n)


def test_the_compose_file_follows_the_compose_spec() -> None:
    check = [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec"]
    result = subprocess.run([*check, str(COMPOSE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_runs_three_nodes_of_this_image_each_on_its_own_volume() -> None:
    services = compose()["services"]
    assert sorted(services) == ["n1", "n2", "n3"]
    volumes = []
    for service in services.values():
        assert (COMPOSE.parent / service["build"]["context"]).resolve() == DOCKERFILE.parent
        assert "dockerfile" not in service["build"] and "entrypoint" not in service
        (volume,) = service["volumes"]
        name, _, mount = volume.partition(":")
        assert mount == image_volume()
        volumes.append(name)
    assert sorted(volumes) == sorted(set(volumes)) == sorted(compose()["volumes"])


def test_compose_publishes_each_node_on_loopback_only() -> None:
    published = []
    for service in compose()["services"].values():
        (port,) = service["ports"]
        host_ip, host_port, container_port = port.split(":")
        assert (host_ip, int(container_port)) == ("127.0.0.1", image_port())
        published.append(int(host_port))
    assert published == [8080, 8081, 8082]


def test_compose_gives_each_node_the_token_from_one_secret_file() -> None:
    secrets = compose()["secrets"]
    (name,) = secrets
    one_liner = re.search(r"> (\S+) && chmod 0644", COMPOSE.read_text())
    assert one_liner is not None  # the comment shows how to create it, readable by the container's user
    assert (COMPOSE.parent / secrets[name]["file"]).resolve() == ROOT / one_liner[1]
    for service in compose()["services"].values():
        assert service["secrets"] == [name]
        assert service["environment"]["RAFTKV_TOKEN_FILE"] == f"/run/secrets/{name}"


def test_compose_lets_a_node_stop_gracefully_and_start_without_waiting() -> None:
    for service in compose()["services"].values():
        assert seconds(service["stop_grace_period"]) >= LONGEST_STOP
        assert "depends_on" not in service  # no node is ready before a quorum is up
        assert "healthcheck" not in service  # the image's, on /readyz


@pytest.mark.parametrize("name", ["n1", "n2", "n3"])
def test_each_compose_node_starts_with_the_settings_it_is_given(name: str, tmp_path: Path) -> None:
    services = compose()["services"]
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    for secret in compose()["secrets"]:
        (secrets / secret).write_text(f"{TOKEN}\n")
    env = {**image_env(), **services[name]["environment"]}
    env = {key: value.replace("/run/secrets/", f"{secrets}/") for key, value in env.items()}
    entrypoint = json.loads(only("ENTRYPOINT"))
    settings = run_node([*entrypoint, *services[name].get("command", [])], env, tmp_path)
    port = image_port()
    assert (settings["id"], settings["url"], settings["token"]) == (name, f"http://{name}:{port}", TOKEN)
    assert settings["data_dir"] == image_volume()
    expected = {service: f"http://{service}:{port}" for service in services}
    assert settings["members"] == settings["founders"] == expected


# --- deploy/k8s ---


@cache
def k8s_objects() -> dict[str, dict[str, Any]]:
    """Every object under deploy/k8s, by "Kind/name"."""
    objects = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            objects[f"{doc['kind']}/{doc['metadata']['name']}"] = doc
    return objects


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [obj for obj in k8s_objects().values() if obj["kind"] == kind]


def statefulset() -> dict[str, Any]:
    (sts,) = of_kind("StatefulSet")
    return sts


def pod_spec() -> dict[str, Any]:
    spec: dict[str, Any] = statefulset()["spec"]["template"]["spec"]
    return spec


def container() -> dict[str, Any]:
    containers: list[dict[str, Any]] = pod_spec()["containers"]
    (only_container,) = containers
    return only_container


def headless_service() -> dict[str, Any]:
    (service,) = [s for s in of_kind("Service") if s["spec"].get("clusterIP") == "None"]
    return service


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("name", sorted(k8s_objects()))
def test_each_manifest_is_valid_kubernetes(name: str, version: str) -> None:
    try:
        kubernetes_validate.validate(k8s_objects()[name], version, strict=True)
    except kubernetes_validate.ValidationError as e:
        pytest.fail(f"{name} is not valid Kubernetes {version}: {e.message} at {list(e.path)}")


def test_the_manifests_are_a_statefulset_its_services_and_its_budget() -> None:
    assert sorted(k8s_objects()) == [
        "PodDisruptionBudget/raftkv",
        "Service/raftkv",
        "Service/raftkv-peers",
        "StatefulSet/raftkv",
    ]


def test_the_services_and_the_budget_select_the_statefulset_pods() -> None:
    pod_labels = statefulset()["spec"]["template"]["metadata"]["labels"]
    selectors = [statefulset()["spec"]["selector"]["matchLabels"]]
    selectors += [service["spec"]["selector"] for service in of_kind("Service")]
    selectors += [pdb["spec"]["selector"]["matchLabels"] for pdb in of_kind("PodDisruptionBudget")]
    for selector in selectors:
        assert selector and selector.items() <= pod_labels.items()
    (container_port,) = container()["ports"]
    for service in of_kind("Service"):
        (port,) = service["spec"]["ports"]
        assert port["targetPort"] == container_port["name"]
        assert port["port"] == container_port["containerPort"]
    assert container_port["containerPort"] == image_port()


def test_the_peers_find_each_other_before_any_is_ready() -> None:
    spec = statefulset()["spec"]
    assert spec["serviceName"] == headless_service()["metadata"]["name"]
    assert headless_service()["spec"]["publishNotReadyAddresses"] is True
    # OrderedReady would start a pod only once the one before is ready, which needs a leader, which needs both
    assert spec["podManagementPolicy"] == "Parallel"


def test_a_disruption_never_takes_the_quorum() -> None:
    replicas = statefulset()["spec"]["replicas"]
    (pdb,) = of_kind("PodDisruptionBudget")
    assert replicas == 3
    assert replicas - pdb["spec"]["maxUnavailable"] >= replicas // 2 + 1


def test_the_probes_use_the_health_endpoints() -> None:
    (container_port,) = container()["ports"]
    probes = {kind: container()[f"{kind}Probe"]["httpGet"] for kind in ("readiness", "liveness", "startup")}
    assert {kind: probe["path"] for kind, probe in probes.items()} == {
        "readiness": "/readyz",
        "liveness": "/healthz",
        "startup": "/healthz",
    }
    for probe in probes.values():
        assert probe["path"] in api_paths() and probe["port"] == container_port["name"]


def secret_created() -> tuple[str, str, str]:
    """The Secret's name, its key and the file it is made from, as the StatefulSet's comment creates it."""
    pattern = r"kubectl create secret generic (\S+) --from-file=([^=\s]+)=(\S+)"
    created = re.search(pattern, (K8S / "statefulset.yaml").read_text())
    assert created is not None
    name, key, source = created.groups()
    return name, key, source


def token_volume() -> tuple[dict[str, Any], str]:
    """The secret volume, and where the container mounts it."""
    (volume,) = [v for v in pod_spec()["volumes"] if "secret" in v]
    (mount,) = [m for m in container()["volumeMounts"] if m["name"] == volume["name"]]
    return volume, mount["mountPath"]


def test_the_token_comes_from_the_secret_the_comment_creates() -> None:
    name, key, source = secret_created()
    (compose_secret,) = compose()["secrets"].values()
    assert ROOT / source == (COMPOSE.parent / compose_secret["file"]).resolve()  # one token file for both
    volume, mount_path = token_volume()
    assert volume["secret"]["secretName"] == name
    env = {item["name"]: item.get("value") for item in container()["env"]}
    assert env["RAFTKV_TOKEN_FILE"] == f"{mount_path}/{key}"
    # root owns the file; the pod's group (the image's) may read it
    assert volume["secret"]["defaultMode"] & 0o040
    assert pod_spec()["securityContext"]["fsGroup"] == image_user()[1]


def test_the_pods_run_as_the_image_user_with_a_read_only_root() -> None:
    pod, own = pod_spec()["securityContext"], container()["securityContext"]
    assert (pod["runAsUser"], pod["runAsGroup"]) == image_user()
    assert pod["runAsNonRoot"] is True and own["readOnlyRootFilesystem"] is True
    assert own["allowPrivilegeEscalation"] is False and own["capabilities"]["drop"] == ["ALL"]
    (claim,) = statefulset()["spec"]["volumeClaimTemplates"]
    (mount,) = [m for m in container()["volumeMounts"] if m["name"] == claim["metadata"]["name"]]
    assert mount["mountPath"] == image_volume()  # the only place the node writes
    assert container()["resources"]["requests"].keys() >= {"cpu", "memory"}


def test_the_grace_period_covers_the_leader_hand_over() -> None:
    assert pod_spec()["terminationGracePeriodSeconds"] >= LONGEST_STOP


def pod_env(pod_name: str, token_dir: Path) -> dict[str, str]:
    """The environment Kubernetes gives the container of ``pod_name``: the image's, the Services' variables
    (unless the pod turns them off), then the container's own, with the token volume at ``token_dir``."""
    env = image_env()
    if pod_spec().get("enableServiceLinks", True):
        for service in of_kind("Service"):
            if service["spec"].get("clusterIP") != "None":  # headless Services get none
                prefix = service["metadata"]["name"].upper().replace("-", "_")
                port = service["spec"]["ports"][0]["port"]
                env |= {f"{prefix}_SERVICE_HOST": "192.0.2.1", f"{prefix}_SERVICE_PORT": str(port)}
    fields = {"metadata.name": pod_name, "metadata.namespace": NAMESPACE}
    _, token_mount = token_volume()
    for item in container()["env"]:
        value = item["value"] if "value" in item else fields[item["valueFrom"]["fieldRef"]["fieldPath"]]
        env[item["name"]] = value.replace(f"{token_mount}/", f"{token_dir}/")
    return env


@pytest.mark.parametrize("ordinal", [0, 1, 2])
def test_each_pod_starts_with_the_settings_it_is_given(ordinal: int, tmp_path: Path) -> None:
    sts, pod_name = statefulset(), f"{statefulset()['metadata']['name']}-{ordinal}"
    token_dir = tmp_path / "token"
    token_dir.mkdir()
    (token_dir / secret_created()[1]).write_text(f"{TOKEN}\n")
    settings = run_node(container()["command"], pod_env(pod_name, token_dir), tmp_path)
    domain = f"{headless_service()['metadata']['name']}.{NAMESPACE}.svc.cluster.local"
    port = container()["ports"][0]["containerPort"]
    pods = [f"{sts['metadata']['name']}-{n}" for n in range(sts["spec"]["replicas"])]
    expected = {pod: f"http://{pod}.{domain}:{port}" for pod in pods}
    assert (settings["id"], settings["url"], settings["token"]) == (pod_name, expected[pod_name], TOKEN)
    assert settings["listen"] == f"0.0.0.0:{port}" and settings["data_dir"] == image_volume()
    assert settings["members"] == settings["founders"] == expected
