"""Progress on stderr for long commands: rewritten in place on a terminal, one final line elsewhere; ``raftkv
restore`` tells the bytes it copied, ``raftkv cluster`` which node leads which term once one does."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from raftkv import cli, kv
from raftkv.backup import BackupHeader, restore_data_dir, write_data
from raftkv.progress import ProgressLine
from raftkv.raft.membership import Membership
from raftkv.raft.types import Snapshot
from raftkv_harness.cluster import free_ports


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_sees_the_line_rewritten_and_a_pipe_only_the_last_state() -> None:
    for stream in (Terminal(), io.StringIO()):
        progress = ProgressLine(stream)
        progress.update("copying 10 MiB")
        progress.update("copying 9 MiB")
        progress.finish("copied")
        output = stream.getvalue()
        assert output.endswith("\n") and output.count("\n") == 1
        if stream.isatty():
            first, second, last = output.split("\r")[1:]
            assert first.startswith("copying 10 MiB (") and second.startswith("copying 9 MiB (")
            assert len(second) == len(first)  # the shorter line blanks what the longer one left
            assert last.startswith("copied (")
        else:
            assert output.startswith("copied (") and "\r" not in output


def make_backup(path: Path, keys: int) -> BackupHeader:
    """A backup file of a store holding ``keys`` keys."""
    store = kv.KVStore()
    for index in range(1, keys + 1):
        store.apply(index, kv.encode_command(kv.Put(f"key-{index}", "x" * 1000)))
    data = path.with_suffix(".data")
    size, crc = write_data(data, store.snapshot())
    header = BackupHeader(Snapshot(keys, 1, Membership.of(["n1"], {"n1": "http://127.0.0.1:1"})), size, crc)
    path.write_bytes(header.encode() + data.read_bytes())
    return header


def test_restore_tells_the_bytes_copied(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    backup = tmp_path / "store.backup"
    header = make_backup(backup, keys=50)
    copied: list[int] = []
    with backup.open("rb") as file:
        restore_data_dir(file, tmp_path / "direct", "r1", "http://127.0.0.1:1", copied.append)
    assert copied and copied == sorted(copied) and copied[-1] == header.size

    cli.main(["restore", str(backup), "--data-dir", str(tmp_path / "restored"), "--id", "r1"])
    out, err = capsys.readouterr()
    assert json.loads(out)["index"] == 50
    assert err.startswith(f"restored index 50 into {tmp_path / 'restored'}: ") and err.endswith(" s)\n")


def test_cluster_start_up_tells_who_leads(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    command = [sys.executable, "-m", "raftkv", "cluster", "--nodes", "1", "--base-port", str(port)]
    command += ["--data-dir", str(tmp_path)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stderr is not None
        line = process.stderr.readline()  # not a terminal: only the final line
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
    assert line.startswith("n1 leads term 1 ("), line
