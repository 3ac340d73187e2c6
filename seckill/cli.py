"""The `seckill` command: migrate, serve, worker, up, token, reconcile."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from seckill.settings import ConfigError, Settings

log = logging.getLogger("seckill")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="seckill", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help="create the database if missing and apply pending migrations")
    serve = sub.add_parser("serve", help="the HTTP front door")
    serve.add_argument("--port", type=int)
    serve.add_argument("--processes", type=int, default=1,
                       help="front-door processes sharing the port (SO_REUSEPORT)")
    worker = sub.add_parser("worker", help="background workers (all when none is named)")
    worker.add_argument("names", nargs="*", metavar="NAME")
    up = sub.add_parser("up", help="migrate, then the front door and every worker")
    up.add_argument("--port", type=int)
    up.add_argument("--demo", action="store_true",
                    help="also schedule a live demo sale and print how to buy from it")
    token = sub.add_parser("token", help="print a signed token")
    token.add_argument("user_id")
    token.add_argument("--operator", action="store_true")
    token.add_argument("--ttl", type=int, default=3600, metavar="SECONDS")
    rec = sub.add_parser("reconcile", help="compare Redis, RabbitMQ and PostgreSQL for a sale")
    rec.add_argument("sale_id")
    rec.add_argument("--repair", action="store_true")
    return p


def _fail(message: str, code: int = 2) -> int:
    print(f"seckill: {message}", file=sys.stderr)
    return code


async def _preflight(settings: Settings) -> list[str]:
    from seckill.preflight import missing_services

    return await missing_services(settings)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        return _fail(str(exc))
    logging.basicConfig(level=settings.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if getattr(args, "port", None) is not None:
        settings = settings.with_(port=args.port)

    if args.command == "token":
        from seckill.auth import mint_token

        if not 1 <= len(args.user_id) <= 64:
            return _fail("USER_ID must be 1 to 64 characters.")
        if args.ttl < 1:
            return _fail("--ttl must be at least 1 second.")
        settings.warn_if_insecure()
        print(mint_token(settings.jwt_secret, args.user_id, operator=args.operator,
                         ttl_s=args.ttl))
        return 0

    problems = asyncio.run(_preflight(settings))
    # The front door serves without RabbitMQ (wins wait in the Redis outbox).
    needed = {"migrate": ["PostgreSQL"], "serve": ["Redis", "PostgreSQL"]}.get(args.command)
    if needed is not None:
        problems = [p for p in problems if any(p.startswith(n) for n in needed)]
    if problems:
        for problem in problems:
            print(f"seckill: {problem}", file=sys.stderr)
        return 2

    if args.command == "migrate":
        from seckill.migrate import migrate

        report = asyncio.run(migrate(settings.database_url))
        if report.created_database:
            print("created the database")
        print(f"applied {len(report.applied)} migration(s)"
              + (f": {', '.join(report.applied)}" if report.applied else "; nothing to do"))
        return 0

    if args.command in ("serve", "worker", "reconcile"):
        from seckill.migrate import pending

        todo = asyncio.run(pending(settings.database_url))
        if todo is None or todo:
            return _fail("the database is not migrated"
                         + (f" ({', '.join(todo)} pending)" if todo else " (it does not exist)")
                         + ": run `seckill migrate` first.")
    settings.warn_if_insecure()
    if args.command == "serve":
        from seckill.runner import serve_processes

        if not 1 <= args.processes <= 256:
            return _fail("--processes must be between 1 and 256.")
        serve_processes(settings, args.processes)
        return 0

    if args.command == "worker":
        from seckill.runner import run, run_workers
        from workers import WORKERS

        names = args.names or list(WORKERS)
        unknown = [n for n in names if n not in WORKERS]
        if unknown:
            return _fail(f"unknown worker(s) {', '.join(unknown)}; known: {', '.join(WORKERS)}")
        run(lambda stop: run_workers(settings, names, stop))
        return 0

    if args.command == "up":
        from seckill.up import up

        return up(settings, demo=args.demo)

    if args.command == "reconcile":
        from seckill.reconcile import reconcile_command

        return reconcile_command(settings, args.sale_id, repair=args.repair)
    return _fail(f"unknown command {args.command}")


if __name__ == "__main__":
    sys.exit(main())
