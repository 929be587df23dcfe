"""The ``raftkv`` commands that talk to a running cluster (etcdctl-like), built on ``raftkv.client``.

Each prints the answer as JSON (one line) on success and exits 0; an error answer is printed on stderr with
exit status 1 (2 for bad usage, as argparse does).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from raftkv.backup import BackupError, read_header, restore_data_dir
from raftkv.client import Client, RaftkvError
from raftkv.progress import ProgressLine, mib

DEFAULT_ENDPOINT = "http://127.0.0.1:8080"
LOCAL_CLUSTER_TOKEN = Path(".raftkv/token")  # where ``raftkv cluster`` (``make cluster``) keeps its token
FAILED = 1


def add_client_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--endpoints",
        default=os.environ.get("RAFTKV_ENDPOINTS", DEFAULT_ENDPOINT),
        help=f"comma-separated URLs of members; one is enough (default {DEFAULT_ENDPOINT}, or RAFTKV_ENDPOINTS)",
    )
    parser.add_argument("--token", help="the cluster token (default RAFTKV_TOKEN, or the file below)")
    parser.add_argument(
        "--token-file",
        type=Path,
        help=f"read the cluster token from this file (default {LOCAL_CLUSTER_TOKEN}, when it exists)",
    )
    parser.add_argument(
        "--client-token", default=os.environ.get("RAFTKV_CLIENT_TOKEN"), help="the client token"
    )
    parser.add_argument("--cacert", type=Path, help="verify https members against this CA (PEM)")


def client_of(args: argparse.Namespace) -> Client:
    return Client(
        args.endpoints.split(","),
        token=cluster_token(args),
        client_token=args.client_token,
        ca_file=args.cacert,
    )


def cluster_token(args: argparse.Namespace) -> str | None:
    if args.token:
        return str(args.token)
    if args.token_file:
        return str(args.token_file.read_text().strip())
    if os.environ.get("RAFTKV_TOKEN"):
        return os.environ["RAFTKV_TOKEN"]
    return LOCAL_CLUSTER_TOKEN.read_text().strip() if LOCAL_CLUSTER_TOKEN.exists() else None


def add_commands(commands: Any) -> None:
    """The ``member``, ``leader``, ``snapshot`` and ``restore`` commands."""
    member = commands.add_parser("member", help="list or change the members")
    member_commands = member.add_subparsers(dest="action", required=True)
    listing = member_commands.add_parser("list", help="the members and the leader")
    add = member_commands.add_parser("add", help="add a server (a learner, promoted once caught up)")
    add.add_argument("id")
    add.add_argument("url")
    add.add_argument("--learner", action="store_true", help="keep it a learner (never promoted)")
    remove = member_commands.add_parser("remove", help="remove a server, voter or learner")
    remove.add_argument("id")
    promote = member_commands.add_parser("promote", help="make a caught-up learner a voter now")
    promote.add_argument("id")
    for parser in (listing, add, remove, promote):
        add_client_options(parser)

    leader = commands.add_parser("leader", help="leadership")
    leader_commands = leader.add_subparsers(dest="action", required=True)
    transfer = leader_commands.add_parser(
        "transfer", help="hand leadership to ID (default: the most caught up)"
    )
    transfer.add_argument("id", nargs="?")
    add_client_options(transfer)

    snapshot = commands.add_parser("snapshot", help="backups")
    snapshot_commands = snapshot.add_subparsers(dest="action", required=True)
    save = snapshot_commands.add_parser("save", help="save a consistent point-in-time backup to FILE")
    save.add_argument("file", type=Path)
    add_client_options(save)

    restore = commands.add_parser("restore", help="make DATA_DIR a one-node cluster holding a backup's state")
    restore.add_argument("file", type=Path)
    restore.add_argument("--data-dir", type=Path, required=True)
    restore.add_argument("--id", required=True)
    restore.add_argument("--url", help="where the node will be reached (default http://127.0.0.1:8080)")


def run(args: argparse.Namespace) -> None:
    """Carry out a client command; exits non-zero on an error answer."""
    if args.command == "restore":
        restore(args)
        return
    actions: dict[tuple[str, str], Callable[[Client, argparse.Namespace], object]] = {
        ("member", "list"): lambda c, a: c.members(),
        ("member", "add"): lambda c, a: c.add_member(a.id, a.url, voter=not a.learner),
        ("member", "remove"): lambda c, a: c.remove_member(a.id),
        ("member", "promote"): lambda c, a: c.promote_member(a.id),
        ("leader", "transfer"): lambda c, a: c.transfer_leadership(a.id),
        ("snapshot", "save"): save_backup,
    }
    try:
        with client_of(args) as client:
            print(json.dumps(actions[args.command, args.action](client, args)))
    except RaftkvError as e:
        print(f"raftkv {args.command}: {e}", file=sys.stderr)
        sys.exit(FAILED)


def save_backup(client: Client, args: argparse.Namespace) -> dict[str, str]:
    progress = ProgressLine()
    written = 0

    def show(so_far: int) -> None:
        nonlocal written
        written = so_far
        progress.update(f"saving {args.file}: {mib(written)}")

    headers = client.save_backup(args.file, show)
    progress.finish(f"saved {args.file}: {mib(written)}, index {headers.get('x-raft-snapshot-index', '?')}")
    return headers


def restore(args: argparse.Namespace) -> None:
    url = args.url or DEFAULT_ENDPOINT
    try:
        with args.file.open("rb") as backup:
            header = read_header(backup)
            backup.seek(0)
            progress = ProgressLine()
            doing = f"restoring index {header.snapshot.index} into {args.data_dir}"
            restore_data_dir(
                backup,
                args.data_dir,
                args.id,
                url,
                lambda copied: progress.update(f"{doing}: {mib(copied)} of {mib(header.size)}"),
            )
            progress.finish(
                f"restored index {header.snapshot.index} into {args.data_dir}: {mib(header.size)}"
            )
    except (OSError, BackupError) as e:
        print(f"raftkv restore: {e}", file=sys.stderr)
        sys.exit(FAILED)
    print(
        json.dumps(
            {"data_dir": str(args.data_dir), "id": args.id, "url": url, "index": header.snapshot.index}
        )
    )
