"""The ``keyhouse`` command: serve, bootstrap, db upgrade, backups, engine hosts (``agent``,
``hosts``), and offline recovery commands."""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select

from keyhouse.config import DEFAULT_DATABASE_URL, Settings, parse_rate_limit


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {}
    if getattr(args, "database_url", None):
        overrides["database_url"] = args.database_url
    if getattr(args, "rate_limit", None):
        overrides["rate_limit"] = args.rate_limit
    return Settings(**overrides)


def cmd_serve(args: argparse.Namespace) -> int:
    from granian.constants import Interfaces
    from granian.server import Server

    from keyhouse.migrations import upgrade

    settings = _settings(args)
    settings.pepper_bytes()  # create the pepper file before workers start
    if not args.no_migrate:
        upgrade(settings.database_url)
    # Workers build their app from the environment (keyhouse.app:create_app_from_env).
    os.environ["KEYHOUSE_DATABASE_URL"] = settings.database_url
    os.environ["KEYHOUSE_RATE_LIMIT"] = settings.rate_limit
    if settings.pepper is None:
        os.environ["KEYHOUSE_PEPPER_FILE"] = str(settings.pepper_file.resolve())
    server = Server(
        "keyhouse.app:create_app_from_env",
        address=args.host,
        port=args.port,
        interface=Interfaces.ASGI,
        workers=args.workers,
        factory=True,
        log_access=False,
    )
    if args.workers > 1 and settings.rate_limit_rule and not settings.redis_url:
        print(
            "warning: each worker counts the rate limit on its own; set KEYHOUSE_REDIS_URL "
            "so that the workers share it",
            file=sys.stderr,
        )
    print(f"Keyhouse serving the API on http://{args.host}:{args.port}/v1", flush=True)
    print(f"Console on http://{args.host}:{args.port}/console", flush=True)
    server.serve()
    return 0


def cmd_bootstrap(args: argparse.Namespace) -> int:
    from keyhouse.bootstrap import bootstrap
    from keyhouse.migrations import upgrade

    settings = _settings(args)
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = secrets.token_urlsafe(18)
    upgrade(settings.database_url)
    result = bootstrap(
        settings,
        org_name=args.org_name,
        email=args.email,
        user_name=args.name or args.email.split("@")[0],
        password=password,
        service_name=args.service,
    )
    output = {
        "organizationId": str(result.organization_id),
        "organizationName": args.org_name,
        "userId": str(result.user_id),
        "email": result.email,
        # An existing account keeps its password, which is not known here.
        "password": password if result.user_created else None,
        "keyId": result.key_id,
        "keySecret": result.key_secret,
        "serviceId": str(result.service_id) if result.service_id else None,
        "servicePassword": result.service_password,
        "serviceAddress": result.service_address,
        "caFile": result.ca_file,
    }
    if args.json:
        print(json.dumps(output))
    else:
        print(f"Organization   {args.org_name} ({result.organization_id})")
        print(f"Admin user     {result.email}")
        if result.user_created:
            print(f"Password       {password}")
        else:
            print("Password       (existing account: its password is unchanged)")
        print(f"API key ID     {result.key_id}")
        print(f"API key secret {result.key_secret}")
        if result.service_id:
            print(f"Service        {args.service} ({result.service_id}), started by `serve`")
            print(f"Service password (user default) {result.service_password}")
            print(f"ClickHouse HTTP {result.service_address} (CA: {result.ca_file})")
        print("The passwords and the key secret are shown once; store them now.")
    return 0


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from keyhouse.migrations import upgrade

    upgrade(_settings(args).database_url)
    print("database schema is up to date")
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    """Delete a key without the API, e.g. when its secret leaked and no admin key works."""
    from keyhouse.api_keys.service import delete_key
    from keyhouse.auth import credentials
    from keyhouse.auth.principal import system_principal
    from keyhouse.models import ApiKey
    from keyhouse.state import AppState

    settings = _settings(args)
    state = AppState.from_settings(settings)
    try:
        with state.sessionmaker.begin() as session:
            if args.id:
                key = session.get(ApiKey, uuid.UUID(args.id))
            else:
                lookup = credentials.hash_value(state.pepper, args.key_id)
                key = session.scalar(select(ApiKey).where(ApiKey.key_id_hash == lookup))
            if key is None:
                print("error: no such key", file=sys.stderr)
                return 1
            system = system_principal(key.organization_id, "keyhouse keys revoke")
            delete_key(session, system, key.id)
            print(f"revoked key {key.id} ({key.name}, ...{key.key_suffix})")
    finally:
        state.close()
    return 0


def cmd_invitations_accept(args: argparse.Namespace) -> int:
    """Accept an invitation without the console (headless setups)."""
    from keyhouse.invitations.service import accept_invitation
    from keyhouse.state import AppState

    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = secrets.token_urlsafe(18)
    state = AppState.from_settings(_settings(args))
    try:
        with state.sessionmaker.begin() as session:
            accepted = accept_invitation(
                session, pepper=state.pepper, token=args.token, name=args.name, password=password
            )
    finally:
        state.close()
    print(f"{accepted.email} joined {accepted.organization_name} ({accepted.organization_id})")
    if not args.password_stdin:
        print(f"Password {password} (shown once; used only if the account is new)")
    return 0


def _service_id(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a service id: {text!r}") from None


def cmd_backups_take(args: argparse.Namespace) -> int:
    """Ask the server process that runs the service for a backup now, and wait for it."""
    import time

    from keyhouse.backups import service as backups
    from keyhouse.models import Backup
    from keyhouse.state import AppState

    state = AppState.from_settings(_settings(args))
    try:
        with state.sessionmaker.begin() as session:
            backup_id = backups.request_backup(session, args.service_id).id
        print(f"backup {backup_id} requested; waiting for the server that runs the service")
        deadline = time.monotonic() + args.wait
        while True:
            with state.sessionmaker() as session:
                backup = session.get(Backup, backup_id)
                status = backup.status if backup is not None else "deleted"
                if backup is not None and status != "in_progress":
                    print(_backup_line(backup))
                    if backup.error:
                        print(f"error: {backup.error}", file=sys.stderr)
                    return 0 if status == "done" else 1
                begun = backup is not None and backup.runner is not None
            if status == "deleted" or time.monotonic() > deadline:
                what = "still running" if begun else "not begun: is `keyhouse serve` running?"
                print(f"error: backup {backup_id} {what} after {args.wait} s", file=sys.stderr)
                return 1
            time.sleep(0.2)
    finally:
        state.close()


def _backup_line(backup: Any) -> str:
    finished = backup.finished_at.isoformat(timespec="seconds") if backup.finished_at else "-"
    begun = (backup.started_at or backup.requested_at).isoformat(timespec="seconds")
    return (
        f"{backup.id}  {backup.status:<11}  {backup.type:<11}  {backup.size_bytes:>12}  "
        f"{begun}  {finished}  {backup.trigger}"
    )


def cmd_backups_list(args: argparse.Namespace) -> int:
    from keyhouse.backups import service as backups
    from keyhouse.models import Service
    from keyhouse.state import AppState

    state = AppState.from_settings(_settings(args))
    try:
        with state.sessionmaker() as session:
            service = session.get(Service, args.service_id)
            if service is None:
                print("error: no such service", file=sys.stderr)
                return 1
            print(f"{'ID':<36}  {'STATUS':<11}  {'TYPE':<11}  {'BYTES':>12}  STARTED  FINISHED  BY")
            for backup in backups.service_backups(session, service.id):
                print(_backup_line(backup))
            if service.backup_note:
                print(f"note: {service.backup_note}")
    finally:
        state.close()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="keyhouse", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    db_help = f"database URL (default: $KEYHOUSE_DATABASE_URL or {DEFAULT_DATABASE_URL})"

    serve = commands.add_parser("serve", help="serve the API")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--database-url", help=db_help)
    serve.add_argument(
        "--rate-limit", type=_rate_limit, help="per-key limit, N/Ss or off (default 10/10s)"
    )
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument("--no-migrate", action="store_true", help="do not upgrade the schema")
    serve.set_defaults(func=cmd_serve)

    boot = commands.add_parser(
        "bootstrap", help="create an organization, its first admin user and an admin API key"
    )
    boot.add_argument("--org-name", required=True)
    boot.add_argument("--email", required=True)
    boot.add_argument("--name", help="the admin's display name")
    boot.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    boot.add_argument("--database-url", help=db_help)
    boot.add_argument("--json", action="store_true", help="print one JSON object")
    boot.add_argument("--service", metavar="NAME", help="also create a service with this name")
    boot.set_defaults(func=cmd_bootstrap)

    db = commands.add_parser("db", help="database schema").add_subparsers(
        dest="db_command", required=True
    )
    db_upgrade = db.add_parser("upgrade", help="upgrade the schema to the latest version")
    db_upgrade.add_argument("--database-url", help=db_help)
    db_upgrade.set_defaults(func=cmd_db_upgrade)

    keys = commands.add_parser("keys", help="offline API key commands").add_subparsers(
        dest="keys_command", required=True
    )
    revoke = keys.add_parser("revoke", help="delete a key directly in the database")
    which = revoke.add_mutually_exclusive_group(required=True)
    which.add_argument("--key-id", help="the key ID (the Basic auth user name)")
    which.add_argument("--id", help="the key's management id (UUID)")
    revoke.add_argument("--database-url", help=db_help)
    revoke.set_defaults(func=cmd_keys_revoke)

    invitations = commands.add_parser("invitations", help="invitation commands").add_subparsers(
        dest="invitations_command", required=True
    )
    accept = invitations.add_parser("accept", help="accept an invitation with its token")
    accept.add_argument("token", help="the token from the invitation link")
    accept.add_argument("--name", required=True, help="your display name")
    accept.add_argument(
        "--password-stdin", action="store_true", help="read the password from stdin"
    )
    accept.add_argument("--database-url", help=db_help)
    accept.set_defaults(func=cmd_invitations_accept)

    backups = commands.add_parser("backups", help="service backups").add_subparsers(
        dest="backups_command", required=True
    )
    take = backups.add_parser(
        "take", help="take a backup of a running service now (outside its schedule)"
    )
    take.add_argument("service_id", type=_service_id, metavar="SERVICE_ID")
    take.add_argument(
        "--wait", type=float, default=600.0, help="seconds to wait for it (default 600)"
    )
    take.add_argument("--database-url", help=db_help)
    take.set_defaults(func=cmd_backups_take)
    listing = backups.add_parser("list", help="a service's backups, the most recent first")
    listing.add_argument("service_id", type=_service_id, metavar="SERVICE_ID")
    listing.add_argument("--database-url", help=db_help)
    listing.set_defaults(func=cmd_backups_list)

    from keyhouse.hosts.cli import add_commands

    add_commands(commands, db_help, _settings)
    return parser


def _rate_limit(value: str) -> str:
    try:
        parse_rate_limit(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except Exception as exc:  # a clear message, not a traceback, for operator mistakes
        from keyhouse.api.errors import ApiError

        if isinstance(exc, ApiError):
            print(f"error: {exc.message}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
