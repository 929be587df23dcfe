"""The ``raftkv`` commands that talk to a running cluster (etcdctl-like), built on ``raftkv.client``.

Each prints the answer as JSON (one line; ``watch`` and ``lease keepalive --forever`` one line per answer
until Ctrl-C) on success and exits 0; an error is printed on stderr as ``error: ...`` with exit status 1 (2
for bad usage, as argparse does).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from types import FrameType
from typing import Any

from raftkv.backup import BackupError, read_header, restore_data_dir
from raftkv.client import Client, NotFound, RaftkvError
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
    """The commands on keys and leases, and the ``member``, ``leader``, ``snapshot`` and ``restore`` ones."""
    add_key_commands(commands)
    add_lease_commands(commands)
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


def add_key_commands(commands: Any) -> None:
    get = commands.add_parser("get", help="read a key")
    get.add_argument("key")
    get.add_argument("--consistency", choices=CONSISTENCIES, default="linearizable")
    put = commands.add_parser("put", help="write a key; VALUE is read as JSON, else taken as a string")
    put.add_argument("key")
    put.add_argument("value", type=json_or_string)
    put.add_argument("--lease", type=int, help="tie the key to this lease")
    delete = commands.add_parser("del", help="delete a key")
    delete.add_argument("key")
    txn = commands.add_parser("txn", help="a transaction: a TxnRequest as JSON, from --file or stdin")
    txn.add_argument("--file", type=Path, help="read the TxnRequest from this file (default: stdin)")
    watch = commands.add_parser(
        "watch", help="print every change under PREFIX, one JSON line each, until Ctrl-C"
    )
    watch.add_argument("prefix", nargs="?", default="")
    watch.add_argument("--after-revision", type=int, help="start after this revision (default: now)")
    for parser in (get, put, delete, txn, watch):
        add_client_options(parser)


def add_lease_commands(commands: Any) -> None:
    lease = commands.add_parser("lease", help="grant, refresh, look at and revoke leases")
    lease_commands = lease.add_subparsers(dest="action", required=True)
    grant = lease_commands.add_parser("grant", help="a lease of TTL seconds")
    grant.add_argument("ttl", type=int)
    grant.add_argument("--id", type=int, help="the lease's number (default: the cluster picks one)")
    keepalive = lease_commands.add_parser("keepalive", help="restart the lease's time to live")
    keepalive.add_argument("id", type=int)
    keepalive.add_argument("--forever", action="store_true", help="every third of its ttl, until Ctrl-C")
    revoke = lease_commands.add_parser("revoke", help="end the lease, deleting its keys")
    revoke.add_argument("id", type=int)
    listing = lease_commands.add_parser("list", help="every lease")
    get = lease_commands.add_parser("get", help="a lease's ttl, remaining seconds and keys")
    get.add_argument("id", type=int)
    for parser in (grant, keepalive, revoke, listing, get):
        add_client_options(parser)


CONSISTENCIES = ("linearizable", "lease", "stale")


def json_or_string(text: str) -> object:
    try:
        return json.loads(text)
    except ValueError:
        return text


Action = Callable[[Client, argparse.Namespace], object]


def run(args: argparse.Namespace) -> None:
    """Carry out a client command; exits non-zero on an error answer. An action's answer is printed as a
    JSON line, or one line per item when it is an iterator (a watch), until the iterator or Ctrl-C ends it."""
    if args.command == "restore":
        restore(args)
        return
    actions: dict[tuple[str, str | None], Action] = {
        ("get", None): lambda c, a: found(c.get(a.key, a.consistency), a.key),
        ("put", None): lambda c, a: c.put(a.key, a.value, lease=a.lease),
        ("del", None): lambda c, a: found(c.delete(a.key), a.key),
        ("txn", None): lambda c, a: asdict(c.txn(read_txn(a.file))),
        ("watch", None): lambda c, a: c.watch(a.prefix, a.after_revision),
        ("lease", "grant"): lambda c, a: c.grant_lease(a.ttl, a.id),
        ("lease", "keepalive"): lambda c, a: keep_alive(c, a.id) if a.forever else c.keepalive(a.id),
        ("lease", "revoke"): lambda c, a: c.revoke_lease(a.id),
        ("lease", "list"): lambda c, a: c.list_leases(),
        ("lease", "get"): lambda c, a: c.lease_info(a.id),
        ("member", "list"): lambda c, a: c.members(),
        ("member", "add"): lambda c, a: c.add_member(a.id, a.url, voter=not a.learner),
        ("member", "remove"): lambda c, a: c.remove_member(a.id),
        ("member", "promote"): lambda c, a: c.promote_member(a.id),
        ("leader", "transfer"): lambda c, a: c.transfer_leadership(a.id),
        ("snapshot", "save"): save_backup,
    }
    try:
        with client_of(args) as client:
            answer = actions[args.command, getattr(args, "action", None)](client, args)
            if isinstance(answer, Iterator):
                signal.signal(signal.SIGINT, end_stream)
            for line in answer if isinstance(answer, Iterator) else [answer]:
                print(json.dumps(line), flush=True)
    except (RaftkvError, OSError, ValueError) as e:  # an error answer; a --file that cannot be read
        print(f"error: {e}", file=sys.stderr)
        sys.exit(FAILED)


def end_stream(signum: int, frame: FrameType | None) -> None:
    """Ctrl-C ends a watch or a keep-alive loop at once, with status 0: not by KeyboardInterrupt, which,
    raised inside httpx's connection handling, can leave a lock held so that the exit hangs closing the
    connection. The loop has nothing to save: each line it printed was flushed."""
    os._exit(0)


def found(answer: dict[str, Any] | None, key: str) -> dict[str, Any]:
    if answer is None:
        raise NotFound(404, {"error": f"key {key!r} not found"})
    return answer


def read_txn(path: Path | None) -> Any:
    try:
        return json.loads(path.read_text() if path else sys.stdin.read())
    except json.JSONDecodeError as e:
        raise ValueError(f"the transaction is not JSON: {e}") from None


def keep_alive(client: Client, lease: int) -> Iterator[dict[str, Any]]:
    """Refresh ``lease`` every third of its ttl, forever."""
    while True:
        answer = client.keepalive(lease)
        yield answer
        time.sleep(answer["ttl"] / 3)


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
