"""What ships: the wheel holds the product and nothing of the test harness, and the layers import one way."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_wheel_holds_the_product_and_no_harness(tmp_path: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "-q",
        "-w",
        str(tmp_path),
    ]
    subprocess.run([*command, str(ROOT)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("raftkv-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    packages = {name.split("/")[0] for name in names if not name.startswith("raftkv-")}
    assert packages == {"raftkv"}
    assert "raftkv/openapi.yaml" in names and "raftkv/raft/core.py" in names
    dashboard = {f"raftkv/dashboard/{name}" for name in ("index.html", "dashboard.js", "dashboard.css")}
    assert dashboard <= set(names)
    assert not [name for name in names if "harness" in name or "testing" in name]


def test_the_transport_needs_nothing_from_the_http_app() -> None:
    script = "import raftkv.transport, sys; print([m for m in sys.modules if m.startswith('raftkv.api')])"
    assert (
        subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True).stdout
        == "[]\n"
    )


def test_the_core_storage_and_state_machine_import_nothing_above_them() -> None:
    script = (
        "import raftkv.raft.core, raftkv.storage, raftkv.kv, raftkv.machine, sys;"
        "print(sorted({m for m in sys.modules if m.split('.')[:1] == ['raftkv'] and m.split('.')[1:2] in"
        " (['api'], ['node'], ['transport'], ['cli'], ['serve'], ['wire'], ['config'])}))"
    )
    assert (
        subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True).stdout
        == "[]\n"
    )
