"""The `arbiter` command: serve, check, sfu, rooms, bench (argparse: stdlib, enough here)."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import signal
import sys
from collections.abc import Sequence

import trio

from . import logs
from .config import (
    Config,
    ConfigError,
    StartupError,
    check_files,
    check_udp_ports,
    effective_toml,
    exposure_warning,
    load_config,
)


def _configure(args: argparse.Namespace) -> Config:
    """The configuration (file, environment, then command-line overrides), and logging set up
    from it. Raises ConfigError."""
    config = load_config(args.config)
    log_format = getattr(args, "log_format", None)
    if log_format:
        config = config.replace(log={"format": log_format})
    logs.setup("debug" if args.verbose else config.log.level, config.log.format)
    return config


def _serve(args: argparse.Namespace) -> int:
    from .server import Server

    config = _configure(args)
    server = Server(config)
    # Every check and bind before anything runs or logs: a failed start is one line.
    try:
        server.prepare()
    except StartupError as exc:
        print(f"arbiter: {exc.message}", file=sys.stderr)
        return 2

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

    try:
        trio.run(main)
    except BaseExceptionGroup as group:  # trio nurseries wrap what their tasks raise
        refused, _ = group.split(StartupError)
        if refused is None:
            raise
        print(f"arbiter: {_leaf(refused)}", file=sys.stderr)
        return 2
    print("Arbiter stopped", flush=True)
    return 0


def _leaf(group: BaseException) -> BaseException:
    while isinstance(group, BaseExceptionGroup):
        group = group.exceptions[0]
    return group


def _check(args: argparse.Namespace) -> int:
    """`arbiter check`: the effective configuration with secrets masked, or the one error."""
    from .server import announced_addresses, media_ports

    config = load_config(args.config)
    check_files(config)
    source = args.config if args.config is not None else "(no file: defaults)"
    print(f"# arbiter check: the effective configuration of {source}, environment applied,")
    print("# secrets masked")
    print(effective_toml(config), end="")
    warning = exposure_warning(config, announced_addresses(config), media_ports(config))
    if warning:
        print(f"arbiter: warning: {warning}", file=sys.stderr)
    return 0


def _sfu(args: argparse.Namespace) -> int:
    """An SFU worker for a gateway (docs/PROTOCOL.md section 1)."""
    from .sfu.worker import Worker, WorkerRefused

    config = _configure(args)
    token = args.token or config.workers.token
    if not token:
        print("arbiter sfu: a worker token is required (--token or workers.token)", file=sys.stderr)
        return 2
    try:
        check_udp_ports(config.media, 1)
    except StartupError as exc:
        print(f"arbiter sfu: {exc.message}", file=sys.stderr)
        return 2
    worker = Worker(config, args.gateway, token, args.id, parent_pid=args.parent)
    try:
        trio.run(worker.run)
    except BaseExceptionGroup as group:  # trio nurseries wrap what their tasks raise
        refused, _ = group.split(WorkerRefused)
        if refused is None:
            raise
        leaf: BaseException = refused
        while isinstance(leaf, BaseExceptionGroup):
            leaf = leaf.exceptions[0]
        print(f"arbiter sfu: the gateway refused this worker: {leaf}", file=sys.stderr)
        return 1
    except WorkerRefused as exc:
        print(f"arbiter sfu: the gateway refused this worker: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0


def _server_url(args: argparse.Namespace) -> str:
    if args.server:
        return str(args.server).rstrip("/")
    config = load_config(args.config)
    scheme = "https" if config.http.tls_cert else "http"
    return f"{scheme}://127.0.0.1:{config.http.port}"


def _admin_call(base: str, method: str, path: str, body: object = None) -> tuple[int, str]:
    """One request to the operator's own server: (status, body text). Stdlib only, so that
    `arbiter rooms` needs no HTTP client library in a server install. URLError (OSError) when
    the server cannot be reached."""
    import ssl
    import urllib.error
    import urllib.request

    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    # The server on this host, whose certificate names its public host, not 127.0.0.1.
    context = ssl._create_unverified_context() if base.startswith("https:") else None
    try:
        with urllib.request.urlopen(request, timeout=30, context=context) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:  # a status other than 2xx: still an answer
        return exc.code, exc.read().decode()


def _rooms(args: argparse.Namespace) -> int:
    """Operator commands over the running server's /admin/ routes (never its database)."""
    import getpass

    base = _server_url(args)
    try:
        if args.action == "list":
            status, text = _admin_call(base, "GET", "/admin/rooms")
            if status == 200:
                for room in json.loads(text)["rooms"]:
                    print(json.dumps(room))
                return 0
        elif args.action == "create":
            status, text = _admin_call(base, "PUT", "/createRoom")
            print(text)
            return 0 if status == 200 else 1
        elif args.room is None:
            print(f"arbiter rooms {args.action}: a room id is required", file=sys.stderr)
            return 2
        elif args.action == "close":
            status, text = _admin_call(base, "POST", f"/admin/rooms/{args.room}/close")
        else:  # password
            password: str | None = None
            if not args.clear:
                # Not from the command line: it would show in ps and shell history.
                if sys.stdin.isatty():
                    password = getpass.getpass("New room password: ")
                else:
                    password = sys.stdin.readline().rstrip("\n")
            status, text = _admin_call(
                base, "PUT", f"/admin/rooms/{args.room}/password", {"password": password}
            )
    except OSError as exc:  # urllib's URLError, timeouts, refused connections
        reason = getattr(exc, "reason", exc)
        print(f"arbiter rooms: server not reachable at {base} ({reason})", file=sys.stderr)
        return 1
    if status == 404 and json.loads(text or "{}").get("message") == "Not found":
        print(f"arbiter rooms: {base} does not answer /admin/ to this address"
              " (http.admin_allow)", file=sys.stderr)  # fmt: skip
        return 1
    print(text)
    return 0 if status == 200 else 1


def build_parser(with_bench: bool = False) -> argparse.ArgumentParser:
    """The parser; `with_bench` imports the benchmark's modules for the `bench` verb's options
    (without it `bench` is listed for --help but has none)."""
    parser = argparse.ArgumentParser(prog="arbiter", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"arbiter {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the server (HTTP API, WebSocket gateway, SFUs)")
    serve.add_argument("--config", default=None, help="path to arbiter.toml")
    serve.add_argument("--log-format", choices=["text", "json"], default=None,
                       help="log lines as text or one JSON object per line (log.format)")  # fmt: skip
    serve.set_defaults(func=_serve)

    check = sub.add_parser(
        "check", help="validate a configuration and print it in full (secrets masked)"
    )
    check.add_argument("--config", default=None, help="path to arbiter.toml")
    check.set_defaults(func=_check)

    sfu = sub.add_parser("sfu", help="run an SFU worker for a gateway")
    sfu.add_argument(
        "--gateway", required=True, help="the gateway's WebSocket URL (ws[s]://host/ws)"
    )
    sfu.add_argument("--token", default=None, help="worker token (default: workers.token)")
    sfu.add_argument("--id", default=None, help="worker id (default: host-pid)")
    sfu.add_argument("--config", default=None, help="arbiter.toml ([media] and logging)")
    sfu.add_argument(
        "--parent", type=int, default=None, help="exit when this process is gone (local workers)"
    )
    sfu.add_argument("--log-format", choices=["text", "json"], default=None,
                     help="log lines as text or one JSON object per line (log.format)")  # fmt: skip
    sfu.set_defaults(func=_sfu)

    rooms = sub.add_parser(
        "rooms",
        help="operate a running server's rooms: list, create, close, set or clear a password",
    )
    rooms.add_argument("action", choices=["list", "create", "close", "password"])
    rooms.add_argument("room", nargs="?", type=int, help="room id (close, password)")
    rooms.add_argument("--clear", action="store_true", help="password: remove the room's password")
    rooms.add_argument("--config", default=None, help="arbiter.toml (to find the server's port)")
    rooms.add_argument("--server", default=None, help="server URL (default: from --config)")
    rooms.set_defaults(func=_rooms)

    if with_bench:
        # Only for the bench verb: its modules pull in aiortc and PyAV (tens of MiB of server
        # memory, and a server must run without them installed).
        from .bench.cli import add_parser as add_bench

        add_bench(sub)
    else:
        sub.add_parser("bench", help=BENCH_HELP, add_help=False)
    return parser


BENCH_HELP = "load generator and benchmark report (BENCHMARKS.md)"


def _version() -> str:
    """The installed distribution's version (package metadata), else the source tree's."""
    try:
        return importlib.metadata.version("arbiter")
    except importlib.metadata.PackageNotFoundError:
        from . import __version__

        return __version__


def _verb(argv: Sequence[str]) -> str | None:
    """The subcommand: the first argument that is not an option (the top-level options take
    no values)."""
    return next((arg for arg in argv if not arg.startswith("-")), None)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(with_bench=_verb(argv) == "bench").parse_args(argv)
    # Until a verb reads its configuration (serve and sfu set up logging again from it).
    logs.setup("debug" if args.verbose else "info")
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"arbiter: configuration error: {exc.message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
