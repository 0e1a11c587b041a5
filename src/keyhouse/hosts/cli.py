"""``keyhouse agent`` and ``keyhouse hosts ...``: running an engine host, and the operator's
commands on hosts and join tokens (run where the control plane's database is reachable)."""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from keyhouse.config import Settings

SettingsOf = Callable[[argparse.Namespace], Settings]


@contextmanager
def _session(settings: Settings) -> Iterator[tuple[Session, bytes]]:
    from keyhouse.state import AppState

    state = AppState.from_settings(settings)
    try:
        with state.sessionmaker.begin() as session:
            yield session, state.pepper
    finally:
        state.close()


def _id(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an id: {text!r}") from None


def _label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"a label is KEY=VALUE, not {text!r}")
    return key, value


def _address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"HOST:PORT, not {text!r}")
    return host.strip("[]") or "0.0.0.0", int(port)  # noqa: S104 (the operator's choice)


def cmd_agent(args: argparse.Namespace, settings_of: SettingsOf) -> int:
    from keyhouse.hosts.agent import AgentConfig, serve_agent

    data_dir = Path(args.data_dir)
    settings = settings_of(args).model_copy(
        update={"data_dir": data_dir, "clickhouse_host": args.advertise}
    )
    config = AgentConfig(
        server=args.server.rstrip("/"),
        token_file=Path(args.token_file),
        data_dir=data_dir,
        listen=args.listen,
        advertise=args.advertise,
        labels=dict(args.label or []),
        memory_gb=args.memory_gb,
        name=args.name or "",
        ca_file=Path(args.server_ca) if args.server_ca else None,
    )
    serve_agent(config, settings)
    return 0


def cmd_token(args: argparse.Namespace, settings_of: SettingsOf) -> int:
    from keyhouse.hosts import service

    with _session(settings_of(args)) as (session, pepper):
        token, secret = service.new_token(session, pepper)
        token_id = token.id
    print(f"join token {token_id} (shown once; `keyhouse hosts revoke {token_id}` revokes it):")
    print(secret)
    return 0


def cmd_tokens(args: argparse.Namespace, settings_of: SettingsOf) -> int:
    from keyhouse.hosts import service

    with _session(settings_of(args)) as (session, _pepper):
        print(f"{'ID':<36}  {'CREATED':<25}  REVOKED")
        for token in service.tokens(session):
            revoked = token.revoked_at.isoformat(timespec="seconds") if token.revoked_at else "-"
            print(f"{token.id}  {token.created_at.isoformat(timespec='seconds'):<25}  {revoked}")
    return 0


def cmd_revoke(args: argparse.Namespace, settings_of: SettingsOf) -> int:
    from keyhouse.hosts import service

    with _session(settings_of(args)) as (session, _pepper):
        service.revoke_token(session, args.token_id)
    print(f"join token {args.token_id} revoked: no new host joins with it")
    return 0


def cmd_list(args: argparse.Namespace, settings_of: SettingsOf) -> int:
    from keyhouse.db import utcnow
    from keyhouse.hosts import service

    settings = settings_of(args)
    now = utcnow()
    rows: list[dict[str, Any]] = []
    with _session(settings) as (session, _pepper):
        for view in service.list_hosts(session):
            host = view.host
            silent = (now - host.last_seen).total_seconds() > settings.host_silent_seconds
            rows.append(
                {
                    "id": str(host.id),
                    "name": host.name,
                    "labels": host.labels,
                    "memoryGb": host.memory_gb,
                    "usedMemoryGb": sum(service[3] for service in view.services),
                    "channel": host.channel,
                    "advertise": host.advertise,
                    "lastHeartbeat": host.last_seen.isoformat(timespec="seconds"),
                    "status": "silent" if silent else "ok",
                    "schedulable": host.schedulable,
                    "services": [
                        {
                            "id": str(sid),
                            "name": name,
                            "state": state,
                            "generation": generation,
                            "observedGeneration": observed,
                        }
                        for sid, name, state, _memory, generation, observed in view.services
                    ],
                }
            )
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        labels = ",".join(f"{k}={v}" for k, v in sorted(row["labels"].items())) or "-"
        flags = "" if row["schedulable"] else "  (drained)"
        print(
            f"{row['id']}  {row['name']}  {row['status']}{flags}  labels {labels}  "
            f"memory {row['usedMemoryGb']}/{row['memoryGb']} GiB  channel {row['channel']}  "
            f"last heartbeat {row['lastHeartbeat']}"
        )
        for item in row["services"]:
            seen = f"generation {item['observedGeneration']}/{item['generation']}"
            print(f"    {item['id']}  {item['state']:<12}  {item['name']}  ({seen})")
    return 0


def cmd_drain(args: argparse.Namespace, settings_of: SettingsOf) -> int:
    import asyncio

    from keyhouse.hosts.drain import drain
    from keyhouse.state import AppState

    state = AppState.from_settings(settings_of(args))
    try:
        results = asyncio.run(drain(state, args.host_id, lambda line: print(line, flush=True)))
    finally:
        state.close()
    left = [service_id for service_id, outcome in results if not outcome.startswith("moved")]
    if left:
        print(f"error: {len(left)} services not moved; the host stays drained", file=sys.stderr)
        return 1
    print(f"host {args.host_id} is drained: `keyhouse hosts remove {args.host_id}` forgets it")
    return 0


def cmd_remove(args: argparse.Namespace, settings_of: SettingsOf) -> int:
    from keyhouse.hosts import service

    with _session(settings_of(args)) as (session, _pepper):
        service.remove_host(session, args.host_id)
    print(f"host {args.host_id} removed")
    return 0


def add_commands(commands: Any, db_help: str, settings_of: SettingsOf) -> None:
    """``keyhouse agent`` and ``keyhouse hosts``, on the ``keyhouse`` command's parser."""

    def bind(parser: argparse.ArgumentParser, command: Callable[..., int]) -> None:
        parser.set_defaults(func=lambda args: command(args, settings_of))

    agent = commands.add_parser("agent", help="run an engine host for a control plane")
    agent.add_argument("--server", required=True, help="the control plane's URL")
    agent.add_argument("--token-file", required=True, help="the join token (first start)")
    agent.add_argument("--data-dir", required=True, help="where the engines keep their data")
    agent.add_argument(
        "--listen", type=_address, required=True, help="HOST:PORT of the control plane's channel"
    )
    agent.add_argument(
        "--advertise", required=True, help="the host name clients and the control plane use"
    )
    agent.add_argument(
        "--label", type=_label, action="append", help="KEY=VALUE (region, provider, ...)"
    )
    agent.add_argument("--memory-gb", type=int, default=16, help="memory offered to engines")
    agent.add_argument("--name", help="the host's name (default: --advertise)")
    agent.add_argument("--server-ca", help="CA file verifying the control plane's TLS")
    bind(agent, cmd_agent)

    hosts = commands.add_parser("hosts", help="engine hosts and join tokens").add_subparsers(
        dest="hosts_command", required=True
    )
    token = hosts.add_parser("token", help="print a new join token")
    token.add_argument("--database-url", help=db_help)
    bind(token, cmd_token)
    tokens = hosts.add_parser("tokens", help="list join tokens")
    tokens.add_argument("--database-url", help=db_help)
    bind(tokens, cmd_tokens)
    revoke = hosts.add_parser("revoke", help="revoke a join token")
    revoke.add_argument("token_id", type=_id, metavar="TOKEN_ID")
    revoke.add_argument("--database-url", help=db_help)
    bind(revoke, cmd_revoke)
    listing = hosts.add_parser("list", help="hosts, labels, capacity, heartbeats, services")
    listing.add_argument("--json", action="store_true")
    listing.add_argument("--database-url", help=db_help)
    bind(listing, cmd_list)
    drain = hosts.add_parser(
        "drain", help="move every service off a host (backup there, restore elsewhere)"
    )
    drain.add_argument("host_id", type=_id, metavar="HOST_ID")
    drain.add_argument("--database-url", help=db_help)
    bind(drain, cmd_drain)
    remove = hosts.add_parser("remove", help="forget an empty host")
    remove.add_argument("host_id", type=_id, metavar="HOST_ID")
    remove.add_argument("--database-url", help=db_help)
    bind(remove, cmd_remove)
