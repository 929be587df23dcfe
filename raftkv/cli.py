"""The ``raftkv`` command: ``serve`` runs one node, ``cluster`` runs a local cluster of child processes."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import trio

from raftkv import cli_client, logs
from raftkv.config import ConfigError, load_config, parse_peers
from raftkv.local_cluster import run_cluster
from raftkv.serve import serve

USAGE_ERROR = 2  # the exit status of a command that cannot start as asked (argparse uses it too)
NODE_FAILED = 1  # the exit status of a node that stopped on an error (a broken invariant, a failed disk)

SERVE_SETTINGS: dict[str, tuple[type, str]] = {
    # --flag-name sets the setting flag_name: (its type, its help)
    "--id": (str, "this node's id"),
    "--listen": (str, "HOST:PORT to serve on (default 127.0.0.1:8080)"),
    "--url": (str, "the URL peers and clients reach this node at (default http(s)://LISTEN)"),
    "--data-dir": (Path, "where term, vote, log and snapshots live"),
    "--join": (str, "a fresh node asks the cluster at this URL to add it (as POST /cluster/members does)"),
    "--initial-voters": (
        str,
        "ids of the voters a fresh cluster starts with (default: this node and every --peer)",
    ),
    "--tick-ms": (int, "length of one Raft tick (default 50)"),
    "--election-ticks": (int, "election timeout in ticks (default 16, randomized x1-2)"),
    "--heartbeat-ticks": (int, "heartbeat interval in ticks (default 2)"),
    "--snapshot-entries": (int, "snapshot after this many applied entries (default 10000)"),
    "--token": (str, "the cluster token, needed on every Raft message and /cluster/* call"),
    "--token-file": (Path, "read the cluster token from this file"),
    "--client-token": (str, "a token the client API needs too (default: none)"),
    "--client-token-file": (Path, "read the client token from this file"),
    "--cert-file": (Path, "serve HTTPS with this certificate (PEM), with --key-file"),
    "--key-file": (Path, "the private key of --cert-file (PEM)"),
    "--peer-ca-file": (Path, "verify https peers against these CA certificates (PEM)"),
    "--max-value-bytes": (int, "largest value accepted, as JSON (default 1 MiB)"),
    "--max-request-bytes": (int, "largest client request body (default 2 MiB)"),
    "--read-timeout": (float, "seconds a request body may take to arrive (default 10)"),
    "--log-level": (str, "debug, info, warning, error"),
    "--log-format": (
        str,
        "text (the default) or json: one JSON object per line, with the node's term and role",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="raftkv", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    s = commands.add_parser("serve", help="run one node")
    s.add_argument("--config", type=Path, help="a TOML file of settings (keys as the flags, with _)")
    s.add_argument("--peer", action="append", default=[], metavar="ID=URL", help="another voter (repeat)")
    for flag, (kind, description) in SERVE_SETTINGS.items():
        s.add_argument(flag, type=kind, help=description)
    s.add_argument(
        "--insecure",
        action="store_true",
        default=None,
        help="run with peers but no cluster token: anyone who reaches a port can rewrite the data",
    )
    s.add_argument(
        "--allow-fault-injection",
        action="store_true",
        default=None,
        help="let PUT /cluster/partition (cluster token) cut this node off from peers, for demonstrations",
    )

    c = commands.add_parser("cluster", help="run a local cluster of child processes until Ctrl-C")
    c.add_argument("--nodes", type=int, default=3)
    c.add_argument("--base-port", type=int, default=8080)
    c.add_argument("--data-dir", type=Path, default=Path(".raftkv"))

    cli_client.add_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.command not in ("serve", "cluster"):
        cli_client.run(args)
        return
    if args.command == "cluster":
        logging.basicConfig(level=logging.WARNING, format="%(message)s")
        trio.run(run_cluster, args.nodes, args.base_port, args.data_dir)
        print("cluster stopped")
        return
    names = [flag[2:].replace("-", "_") for flag in SERVE_SETTINGS] + ["insecure", "allow_fault_injection"]
    flags = {name: getattr(args, name) for name in names}
    try:
        flags["peers"] = parse_peers(args.peer)
        config = load_config(flags, args.config)
    except ConfigError as e:
        print(f"raftkv serve: {e}", file=sys.stderr)
        sys.exit(USAGE_ERROR)
    logs.configure(config.id, config.log_level, config.log_format)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per Raft message is noise
    try:
        trio.run(serve, config)
    except Exception:
        logging.getLogger("raftkv").critical("node %s stopped on an error", config.id, exc_info=True)
        sys.exit(NODE_FAILED)
