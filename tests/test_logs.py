"""Log lines: plain text by default, one JSON object per line with ``--log-format json``, each with the node's id
and its term and role as of the line."""

from __future__ import annotations

import contextvars
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from raftkv import logs
from raftkv.config import ConfigError, load_config
from raftkv.launch import node_command, wait_for_leader
from raftkv_harness.cluster import HOST, free_ports


@pytest.fixture
def logger() -> Iterator[tuple[logging.Logger, io.StringIO, logging.StreamHandler[io.StringIO]]]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(logs.NodeContext("n7"))
    handler.setFormatter(logs.JsonFormatter())
    logger = logging.getLogger("raftkv.test_logs")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield logger, out, handler
    logger.removeHandler(handler)


def lines(out: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_json_lines_carry_the_term_and_role_as_of_each_line(
    logger: tuple[logging.Logger, io.StringIO, logging.StreamHandler[io.StringIO]],
) -> None:
    log, out, _ = logger
    facts = [(1, "follower")]

    def in_a_node() -> None:
        logs.follow(lambda: facts[-1])
        log.info("elected %s", "n7")
        facts.append((2, "leader"))
        log.warning("still %s", "here")

    log.info("before the node runs")
    contextvars.copy_context().run(in_a_node)
    first, elected, later = lines(out)
    assert (first["node"], first["term"], first["role"]) == ("n7", None, None)
    assert first["logger"] == "raftkv.test_logs" and first["level"] == "INFO"
    assert str(first["time"]).endswith("+00:00")
    assert (elected["message"], elected["term"], elected["role"]) == ("elected n7", 1, "follower")
    assert (later["level"], later["term"], later["role"]) == ("WARNING", 2, "leader")


def test_a_traceback_stays_inside_its_json_line(
    logger: tuple[logging.Logger, io.StringIO, logging.StreamHandler[io.StringIO]],
) -> None:
    log, out, _ = logger
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("it failed")
    (line,) = lines(out)
    assert line["message"] == "it failed" and "ValueError: boom" in str(line["exception"])


def test_plain_text_is_the_default_and_names_the_node(
    logger: tuple[logging.Logger, io.StringIO, logging.StreamHandler[io.StringIO]],
) -> None:
    log, out, handler = logger
    assert load_config({"id": "n1"}).log_format == "text"
    handler.setFormatter(logging.Formatter(logs.TEXT_FORMAT))
    log.info("hello")
    assert out.getvalue().endswith(" n7 INFO raftkv.test_logs: hello\n")


def test_an_unknown_log_format_is_refused_by_name() -> None:
    assert load_config({"id": "n1", "log_format": "json"}).log_format == "json"
    with pytest.raises(ConfigError, match="log_format"):
        load_config({"id": "n1", "log_format": "xml"})


async def test_a_running_node_writes_json_lines(tmp_path: Path) -> None:
    """A one-node cluster elects itself; its last line (on SIGTERM) says it is the leader, in its term."""
    (port,) = free_ports(1)
    log_path = tmp_path / "n1.log"
    command = node_command("n1", f"{HOST}:{port}", tmp_path / "n1", options=["--log-format", "json"])
    with trio.fail_after(60), log_path.open("wb") as log_file:
        process = await trio.lowlevel.open_process(command, stdout=log_file, stderr=log_file)
        try:
            await wait_for_leader([f"http://{HOST}:{port}"])
        finally:
            process.terminate()
            await process.wait()
    records = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert records and all(record["node"] == "n1" for record in records)
    last = records[-1]
    assert last["message"] == "node n1 stopped"
    assert last["role"] == "leader" and isinstance(last["term"], int) and last["term"] >= 1
