"""The `arbiter` command: serve, sfu, rooms, bench (argparse: stdlib, enough for four verbs)."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from collections.abc import Sequence

import trio

from .config import ConfigError, load_config


def _serve(args: argparse.Namespace) -> int:
    from .server import Server

    config = load_config(args.config)
    server = Server(config)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            started = await nursery.start(server.run)
            for url in started.urls:
                print(f"Arbiter listening on {url}", flush=True)
                if "://0.0.0.0:" in url or "://[::]:" in url:
                    # A wildcard is not an address a browser can open: say which one to use.
                    port = url.rsplit(":", 1)[1]
                    scheme = url.split("://", 1)[0]
                    print(
                        f"  open {scheme}://localhost:{port}/<room-name> in a browser", flush=True
                    )
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for signum in signals:
                    print(f"Arbiter stopping ({signal.Signals(signum).name})", flush=True)
                    server.shutdown()
                    break

    trio.run(main)
    print("Arbiter stopped", flush=True)
    return 0


def _rooms(args: argparse.Namespace) -> int:
    from .store import Store

    config = load_config(args.config)
    if args.action == "list":
        store = Store.open(config.store.path)
        try:
            for row in store.live_rooms():
                print(json.dumps(row.__dict__))
        finally:
            store.close()
        return 0
    import httpx

    response = httpx.put(f"{args.server.rstrip('/')}/createRoom", timeout=30)
    print(response.text)
    return 0 if response.status_code == 200 else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="arbiter", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the server (HTTP API, WebSocket gateway, SFUs)")
    serve.add_argument("--config", default=None, help="path to arbiter.toml")
    serve.set_defaults(func=_serve)

    rooms = sub.add_parser("rooms", help="list or create rooms")
    rooms.add_argument("action", choices=["list", "create"])
    rooms.add_argument("--config", default=None, help="path to arbiter.toml (for list)")
    rooms.add_argument("--server", default="http://127.0.0.1:8080", help="server URL (create)")
    rooms.set_defaults(func=_rooms)

    from .bench.cli import add_parser as add_bench

    add_bench(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"arbiter: configuration error: {exc.message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
