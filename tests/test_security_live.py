"""What a real cluster refuses and survives: forged Raft traffic, oversized values, slow clients, a node whose
core breaks an invariant; a node that will not start without its token; and a whole cluster over TLS."""

from __future__ import annotations

import base64
import json
import shutil
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trustme

from raftkv.launch import cluster_token_file, node_command, wait_for_leader
from raftkv_harness.cluster import HOST, LocalCluster, free_ports
from raftkv_harness.faulty_node import Faults

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[LocalCluster]:
    async with LocalCluster(tmp_path, size=3, faults=Faults(crash_on_marked_entry=True)) as c:
        await c.wait_for_leader(timeout=20)
        yield c


async def statuses(cluster: LocalCluster) -> dict[str, dict[str, Any]]:
    found = await cluster.statuses()
    assert all(status is not None for status in found.values()), found
    return {node_id: status for node_id, status in found.items() if status is not None}


async def test_the_forged_append_entries_of_the_report_is_refused(
    cluster: LocalCluster, http: httpx.AsyncClient
) -> None:
    leader = await cluster.wait_for_leader()
    await http.post(cluster.client_url(leader) + "/", json={"value": "real"})
    follower = next(n for n in cluster.nodes if n != leader)
    target = cluster.client_url(follower)
    await wait_applied_everywhere(cluster, http)
    before = await statuses(cluster)
    status = before[follower]
    forged = {
        "type": "append_entries",
        "term": 99,
        "src": leader,
        "dst": follower,
        "prev_index": status["last_log_index"],
        "prev_term": status["term"],
        "commit": status["last_log_index"] + 1,
        "seq": 0,
        "entries": [
            {
                "index": status["last_log_index"] + 1,
                "term": 99,
                "data": base64.b64encode(b'{"op":"put","key":"default","value":"HACKED"}').decode(),
            }
        ],
    }
    for headers in ({}, {"Authorization": "Bearer not-the-token"}):
        for path, body in (("/raft/messages", {"messages": [forged]}), ("/raft/stream", forged)):
            answer = await http.post(
                target + path, content=json.dumps(body).encode() + b"\n", headers=headers
            )
            assert answer.status_code == 401, answer.text
    after = await statuses(cluster)
    assert {n: (s["term"], s["commit_index"], s["leader"]["id"]) for n, s in after.items()} == {
        n: (s["term"], s["commit_index"], s["leader"]["id"]) for n, s in before.items()
    }
    for node_id in cluster.nodes:
        answer = await http.get(cluster.client_url(node_id) + "/?consistency=stale")
        assert answer.json() == {"value": "real"}


async def wait_applied_everywhere(cluster: LocalCluster, http: httpx.AsyncClient) -> None:
    """Until every node has applied what the leader has committed."""
    with trio.fail_after(10):
        while True:
            found = await statuses(cluster)
            if len({(s["commit_index"], s["last_applied"]) for s in found.values()}) == 1:
                return
            await trio.sleep(0.05)


async def test_a_huge_value_is_refused_at_once_and_a_large_one_works(
    cluster: LocalCluster, http: httpx.AsyncClient
) -> None:
    leader = cluster.client_url(await cluster.wait_for_leader())
    before = (await http.get(leader + "/status")).json()["commit_index"]
    huge = b'{"value": "' + b"x" * (20 << 20) + b'"}'
    started = time.monotonic()
    answer = await http.put(leader + "/kv/huge", content=huge, headers={"Content-Type": "application/json"})
    assert answer.status_code == 413 and "error" in answer.json()
    assert time.monotonic() - started < 5  # refused from the headers, not after reading 20 MB
    assert (await http.get(leader + "/status")).json()["commit_index"] == before
    large = "y" * ((1 << 20) - 1024)
    answer = await http.put(leader + "/kv/large", json={"value": large})
    assert answer.status_code == 200, answer.text
    assert (await http.get(leader + "/kv/large")).json()["value"] == large


async def test_a_client_that_sends_half_a_request_is_cut_off(cluster: LocalCluster) -> None:
    """Half a header block is dropped after the keep-alive timeout (5 s), half a body after the read timeout
    (10 s): slow clients cannot hold sockets until the node runs out of file descriptors."""
    port = cluster.node(cluster.nodes[0]).port
    half_headers = b"PUT /kv/x HTTP/1.1\r\nHost: x\r\n"
    half_body = (
        b'PUT /kv/x HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\nContent-Type: application/json\r\n\r\n{"va'
    )

    async def cut_off_after(request: bytes) -> float:
        stream = await trio.open_tcp_stream(HOST, port)
        await stream.send_all(request)
        started = trio.current_time()
        with trio.fail_after(30):
            while await stream.receive_some(65536):
                pass
        await stream.aclose()
        return trio.current_time() - started

    async with trio.open_nursery() as nursery:
        results: dict[str, float] = {}

        async def measure(name: str, request: bytes) -> None:
            results[name] = await cut_off_after(request)

        nursery.start_soon(measure, "headers", half_headers)
        nursery.start_soon(measure, "body", half_body)
    assert results["headers"] < 15 and results["body"] < 20, results


async def test_a_node_whose_core_breaks_stops_and_the_others_carry_on(
    cluster: LocalCluster, http: httpx.AsyncClient
) -> None:
    leader = await cluster.wait_for_leader()
    victim = next(n for n in cluster.nodes if n != leader)
    acknowledged = []
    for i in range(5):
        answer = await http.put(cluster.client_url(leader) + f"/kv/before-{i}", json={"value": i})
        assert answer.status_code == 200
        acknowledged.append(f"before-{i}")
    answer = await http.put(cluster.client_url(leader) + "/kv/trigger", json={"value": f"crash:{victim}"})
    assert answer.status_code == 200  # committed by the leader and the other follower
    process = cluster.node(victim).process
    assert process is not None
    with trio.fail_after(10):
        status = await process.wait()
    assert status != 0
    log = cluster.node(victim).log_path.read_text()
    assert "Traceback" in log and "injected broken invariant" in log and "was stepping" in log
    survivors = [n for n in cluster.nodes if n != victim]
    new_leader = await cluster.wait_for_leader(timeout=20)  # the two left agree on a leader (a majority)
    assert new_leader in survivors
    for key in [*acknowledged, "trigger"]:
        answer = await http.get(cluster.client_url(new_leader) + f"/kv/{key}")
        assert answer.status_code == 200, (key, answer.text)
    answer = await http.put(cluster.client_url(survivors[1]) + "/kv/after", json={"value": "still writable"})
    assert answer.status_code == 200


def run_serve(*args: str, wait: float) -> subprocess.CompletedProcess[str] | subprocess.Popen[str]:
    command = [sys.executable, "-m", "raftkv", "serve", *args]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = process.communicate(timeout=wait)
    except subprocess.TimeoutExpired:
        return process  # still running
    return subprocess.CompletedProcess(command, process.returncode, output)


def test_a_node_with_peers_and_no_token_refuses_to_start(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    common = ["--id", "n1", "--listen", f"{HOST}:{port}", "--data-dir", str(tmp_path / "n1")]
    refused = run_serve(*common, "--peer", "n2=http://127.0.0.1:1", wait=20)
    assert isinstance(refused, subprocess.CompletedProcess)
    assert refused.returncode == 2
    assert "--token, --token-file or RAFTKV_TOKEN" in refused.stdout and "--insecure" in refused.stdout
    running = run_serve(*common, "--peer", "n2=http://127.0.0.1:1", "--insecure", wait=3)
    assert isinstance(running, subprocess.Popen)
    try:
        status = wait_for_status(f"http://{HOST}:{port}")
        assert status["insecure"] is True
    finally:
        running.terminate()
        output, _ = running.communicate(timeout=10)
    assert "running without a cluster token (--insecure)" in output


def wait_for_status(url: str, tls: ssl.SSLContext | None = None) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while True:
        try:
            return dict(httpx.get(url + "/status", verify=tls or True, trust_env=False).json())
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


# --- TLS -----------------------------------------------------------------------------------------------------


@pytest.fixture
def tls_cluster(tmp_path: Path) -> Iterator[tuple[list[subprocess.Popen[bytes]], list[str], Path]]:
    """Three nodes serving HTTPS with certificates of a test CA, verifying each other against it."""
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    cert = ca.issue_cert(HOST, "localhost")
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    ports = dict(zip(("n1", "n2", "n3"), free_ports(3), strict=True))
    urls = {node_id: f"https://{HOST}:{port}" for node_id, port in ports.items()}
    tls = ["--cert-file", str(cert_file), "--key-file", str(key_file), "--peer-ca-file", str(ca_file)]
    token = ["--token-file", str(cluster_token_file(tmp_path))]
    processes = []
    for node_id, port in ports.items():
        peers = {p: u for p, u in urls.items() if p != node_id}
        command = node_command(node_id, f"{HOST}:{port}", tmp_path / node_id, peers, options=[*tls, *token])
        log = (tmp_path / f"{node_id}.log").open("wb")
        processes.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT))
    try:
        yield processes, list(urls.values()), ca_file
    finally:
        for process in processes:
            process.kill()
            process.wait()


def curl(*args: str) -> str:
    curl = shutil.which("curl")
    assert curl is not None, "the TLS test uses curl, as the README does (.ci/run installs it)"
    return subprocess.run(
        [curl, "-sS", "--max-time", "10", *args], capture_output=True, text=True, check=True
    ).stdout


def test_a_cluster_over_tls_answers_the_seed_curl_lines_and_survives_its_leader(
    tls_cluster: tuple[list[subprocess.Popen[bytes]], list[str], Path],
) -> None:
    processes, urls, ca_file = tls_cluster
    tls = ssl.create_default_context(cafile=str(ca_file))
    leader_id, leader_url = trio.run(lambda: wait_for_leader(urls, 30, tls=tls))
    follower = next(url for url in urls if url != leader_url)
    assert json.loads(
        curl("--cacert", str(ca_file), "-X", "POST", follower + "/", "-d", '{"value": "test"}')
    ) == {"value": "test"}
    assert json.loads(curl("--cacert", str(ca_file), follower + "/")) == {"value": "test"}
    with pytest.raises(subprocess.CalledProcessError):
        curl(follower + "/")  # without the CA, the certificate does not verify
    with pytest.raises(httpx.HTTPError):
        httpx.get(follower.replace("https", "http") + "/status", trust_env=False, timeout=2)
    processes[urls.index(leader_url)].kill()  # kill -9
    _, new_url = trio.run(lambda: wait_for_leader(urls, 30, other_than=leader_id, tls=tls))
    assert new_url != leader_url
    assert json.loads(curl("--cacert", str(ca_file), new_url + "/")) == {"value": "test"}
    curl("--cacert", str(ca_file), "-X", "POST", new_url + "/", "-d", '{"value": "after"}')
    assert json.loads(curl("--cacert", str(ca_file), follower + "/")) == {"value": "after"}
