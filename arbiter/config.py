"""Typed configuration: defaults in code, loaded from TOML, overridable from the environment.

Every key of `arbiter.toml` is a field of one of the section dataclasses below. Unknown sections
or keys are errors that name the key (a typo must not silently fall back to a default). Each key
can be overridden by an environment variable `ARBITER_<SECTION>_<KEY>` (upper case), parsed to
the field's type, so containers and systemd units need no edited file.
"""

from __future__ import annotations

import dataclasses
import errno
import ipaddress
import json
import os
import re
import socket
import ssl
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ArbiterError


class ConfigError(ArbiterError):
    """The configuration file or an environment override is invalid (not a peer's fault)."""


class StartupError(ArbiterError):
    """The machine refuses what the configuration asks (a port in use, an address this host
    does not have): `arbiter` prints the one line and exits 2."""


LOOPBACK = ["127.0.0.1/8", "::1"]
# Field metadata of keys whose value is a secret: `arbiter check` prints them masked.
SECRET = {"secret": True}
MASK = "********"


def _check_networks(key: str, values: list[str]) -> None:
    for value in values:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError as exc:
            raise ConfigError(f"{key}: not an address or network: {value!r}") from exc


def _check_ip(key: str, value: str) -> None:
    try:
        ipaddress.ip_address(value)
    except ValueError as exc:
        raise ConfigError(f"{key}: not an IP address: {value!r}") from exc


_HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")
_ICE_URL = re.compile(
    r"(?P<scheme>stuns?|turns?):(?P<host>\[[0-9A-Fa-f:.]+\]|[^\[\]:?/@\s]+)"
    r"(?::(?P<port>[0-9]{1,5}))?(?:\?transport=(?P<transport>udp|tcp))?"
)


def _check_host(key: str, value: str) -> None:
    """An IP address or a DNS name (what a socket can bind or a browser can resolve)."""
    try:
        ipaddress.ip_address(value)
    except ValueError:
        if not _HOSTNAME.fullmatch(value):
            raise ConfigError(f"{key}: not an IP address or host name: {value!r}") from None


def check_ice_url(key: str, url: str) -> None:
    """RFC 7064 (stun:, stuns:) and RFC 7065 (turn:, turns:) URIs: scheme, host, optional port
    1-65535; `?transport=udp|tcp` on TURN URIs only. A browser refuses the whole RTCPeerConnection
    configuration for one bad URL, so a typo here would break every join."""
    match = _ICE_URL.fullmatch(url)
    if match is None:
        raise ConfigError(
            f"{key}: expected a stun:, stuns:, turn: or turns: URL "
            f"(scheme:host[:port][?transport=udp|tcp]), got {url!r}"
        )
    host = match["host"]
    if host.startswith("["):
        _check_ip(key, host[1:-1])
    else:
        _check_host(key, host)
    if match["port"] is not None and not 1 <= int(match["port"]) <= 65535:
        raise ConfigError(f"{key}: port out of range (1-65535) in {url!r}")
    if match["transport"] is not None and not match["scheme"].startswith("turn"):
        raise ConfigError(f"{key}: ?transport= is for turn: and turns: URLs only, got {url!r}")


def _check_port(key: str, port: int) -> None:
    if not 0 <= port <= 65535:
        raise ConfigError(f"{key}: expected 0-65535, got {port}")


def _check_origin(key: str, value: str) -> None:
    if value == "*":
        return
    scheme, sep, rest = value.partition("://")
    if scheme not in ("http", "https") or not sep or not rest or "/" in rest:
        raise ConfigError(
            f'{key}: expected "*" or an origin like https://host[:port], got {value!r}'
        )


@dataclass(frozen=True)
class HttpConfig:
    host: str = "0.0.0.0"
    port: int = 8080
    tls_cert: str = ""
    tls_key: str = ""
    # Origins (scheme://host[:port]) whose pages may call the API and open /ws from a browser.
    # Empty: this server's own origin only. ["*"]: any (the original deployment's CORS).
    allowed_origins: list[str] = field(default_factory=list)
    # Client addresses or networks answered on /metrics; everyone else gets 404.
    metrics_allow: list[str] = field(default_factory=lambda: list(LOOPBACK))
    # Client addresses or networks answered on /admin/ (arbiter rooms); others get 404.
    admin_allow: list[str] = field(default_factory=lambda: list(LOOPBACK))

    def __post_init__(self) -> None:
        _check_host("http.host", self.host)
        _check_port("http.port", self.port)
        if self.tls_cert and not self.tls_key:
            raise ConfigError("http.tls_key: not set, but http.tls_cert is: set both or neither")
        if self.tls_key and not self.tls_cert:
            raise ConfigError("http.tls_cert: not set, but http.tls_key is: set both or neither")
        for origin in self.allowed_origins:
            _check_origin("http.allowed_origins", origin)
        _check_networks("http.metrics_allow", self.metrics_allow)
        _check_networks("http.admin_allow", self.admin_allow)


@dataclass(frozen=True)
class MediaConfig:
    listen: str = "0.0.0.0"
    port: int = 40000
    # Addresses put in the SDP host candidates. Empty: the listen address, or when that is the
    # wildcard, this host's primary address (see sfu.endpoint).
    announced_ip: list[str] = field(default_factory=list)
    consent_timeout: float = 30.0
    # The video codec producers are answered with: "VP8" or "H264" (packetization-mode=1,
    # profile-level-id 42e01f). Every browser of a room must be able to decode it.
    video_codec: str = "VP8"

    def __post_init__(self) -> None:
        _check_ip("media.listen", self.listen)
        _check_port("media.port", self.port)
        for ip in self.announced_ip:
            _check_ip("media.announced_ip", ip)
        if not self.consent_timeout > 0:
            raise ConfigError(
                f"media.consent_timeout: must be > 0 seconds, got {self.consent_timeout}"
            )
        if self.video_codec not in ("VP8", "H264"):
            raise ConfigError(f"media.video_codec: expected VP8 or H264, got {self.video_codec!r}")


@dataclass(frozen=True)
class IceConfig:
    # URLs handed to browsers in GET /config, e.g. "stun:stun.example.org:3478",
    # "turn:turn.example.org:3478?transport=udp".
    servers: list[str] = field(default_factory=list)
    # coturn `static-auth-secret`: when set, TURN URLs get time-limited credentials
    # (username "<expiry>:<connectionId>", password base64(HMAC-SHA1(secret, username))),
    # handed only to identified clients (arbiter/turn.py).
    turn_secret: str = field(default="", metadata=SECRET)
    # Lifetime of the credentials handed to an identified client (seconds).
    turn_ttl: int = 3600

    def __post_init__(self) -> None:
        for url in self.servers:
            check_ice_url("ice.servers", url)
        if not 60 <= self.turn_ttl <= 86400:
            raise ConfigError(f"ice.turn_ttl: expected 60-86400 seconds, got {self.turn_ttl}")


@dataclass(frozen=True)
class RoomsConfig:
    idle_pool: int = 2
    max_rooms: int = 100
    max_participants: int = 16
    empty_timeout: float = 3600.0
    # A claimed room nobody has joined yet is closed after this instead (a visitor joins within
    # seconds of claiming; rooms claimed and never used must not exhaust max_rooms for an hour).
    unjoined_timeout: float = 120.0
    # How long createRoom waits for a new room's SFU to identify before it reports failure.
    start_timeout: float = 10.0

    def __post_init__(self) -> None:
        for key in ("idle_pool", "max_rooms"):
            if getattr(self, key) < 0:
                raise ConfigError(f"rooms.{key}: must be >= 0, got {getattr(self, key)}")
        if self.max_participants < 1:
            raise ConfigError(f"rooms.max_participants: must be >= 1, got {self.max_participants}")
        for key in ("empty_timeout", "unjoined_timeout", "start_timeout"):
            if not getattr(self, key) > 0:
                raise ConfigError(f"rooms.{key}: must be > 0 seconds, got {getattr(self, key)}")


@dataclass(frozen=True)
class LimitsConfig:
    max_message_bytes: int = 65536
    # Frames a slow WebSocket peer may have queued before it is closed with 1008.
    send_queue: int = 256
    # Token bucket per WebSocket connection: `messages_per_second` sustained, `message_burst`
    # at once. The web client sends a few dozen frames per join, so only a flood hits it. A
    # frame over the limit is dropped and answered 429 "Too many messages".
    messages_per_second: float = 50.0
    message_burst: int = 200
    # Frames refused with 429 over a connection's life before it is closed with 1008
    # (0: never close for that; the bounded send queue still closes a peer that stops reading).
    max_refused_messages: int = 100
    # createRoom per client address: a token bucket of this many per minute (burst the same).
    # Over it: 429 "Too many requests" with Retry-After. 0 disables the limit.
    create_room_per_minute: int = 30
    # Addresses of reverse proxies (e.g. ["127.0.0.1"] behind Caddy on this host) whose
    # X-Forwarded-For is believed: the client address is then its last entry. Without this every
    # visitor behind a proxy would share the proxy's createRoom budget.
    trusted_proxies: list[str] = field(default_factory=list)
    # Live rooms one address may hold (created or claimed by it). 0: no limit.
    rooms_per_address: int = 10
    # getRoomId misses (404) per address per minute before 429: room names are not scannable.
    lookups_per_minute: int = 60
    # Refused identifies (404/401/403) per address per minute; past it 429 and close 1008.
    failed_identifies_per_minute: int = 20
    # Seconds a WebSocket may stay open without identifying (then closed 1008).
    identify_timeout: float = 10.0
    # Seconds a request body may take to arrive before 408.
    body_timeout: float = 10.0
    # Chat history a room keeps at most (oldest messages are deleted first).
    chat_rows_per_room: int = 500
    chat_bytes_per_room: int = 262144
    # Chat messages per connection (a token bucket, on top of messages_per_second): every
    # message is stored and sent to the whole room, so a flood must not fill everyone's queue.
    chat_per_second: float = 2.0
    chat_burst: int = 10

    def __post_init__(self) -> None:
        if self.messages_per_second <= 0 or self.message_burst < 1:
            raise ConfigError("limits.messages_per_second and limits.message_burst must be > 0")
        if self.send_queue < 1:
            raise ConfigError(f"limits.send_queue: must be >= 1, got {self.send_queue}")
        if self.chat_per_second <= 0 or self.chat_burst < 1:
            raise ConfigError("limits.chat_per_second and limits.chat_burst must be > 0")
        for key in (
            "max_refused_messages",
            "create_room_per_minute",
            "rooms_per_address",
            "lookups_per_minute",
            "failed_identifies_per_minute",
        ):
            if getattr(self, key) < 0:
                raise ConfigError(f"limits.{key}: must be >= 0")
        for key in ("identify_timeout", "body_timeout"):
            if not 0 < getattr(self, key) <= 3600:
                raise ConfigError(
                    f"limits.{key}: expected 0-3600 seconds, got {getattr(self, key)}"
                )
        if self.max_message_bytes < 256:
            raise ConfigError(
                f"limits.max_message_bytes: expected >= 256, got {self.max_message_bytes}"
            )
        for key in ("chat_rows_per_room", "chat_bytes_per_room"):
            if getattr(self, key) < 1:
                raise ConfigError(f"limits.{key}: must be >= 1")
        _check_networks("limits.trusted_proxies", self.trusted_proxies)


@dataclass(frozen=True)
class WorkersConfig:
    # Shared secret remote SFU workers present in `identify`. Empty: remote workers refused
    # (local workers then get a random token per boot).
    token: str = field(default="", metadata=SECRET)
    # Local SFU worker processes `arbiter serve` starts: "auto" (one per core), a number, or 0
    # (rooms run inside the gateway process). Worker i listens on UDP media.port + i.
    local: str = "auto"

    def __post_init__(self) -> None:
        if self.local != "auto" and not (self.local.isdigit() and int(self.local) <= 64):
            raise ConfigError(f'workers.local: expected "auto" or 0-64, got {self.local!r}')

    def count(self) -> int:
        """How many local workers to start."""
        return (os.cpu_count() or 1) if self.local == "auto" else int(self.local)


@dataclass(frozen=True)
class StoreConfig:
    path: str = "arbiter.db"


LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")


@dataclass(frozen=True)
class LogConfig:
    # "debug", "info", "warning" or "error" (`-v` on the command line: debug).
    level: str = "info"
    # "text" (time LEVEL logger: message) or "json" (one object per line); `--log-format`.
    format: str = "text"
    # One line per HTTP request and WebSocket upgrade (logger arbiter.access). Off by default:
    # request paths hold room names, which let anyone who reads them into the call.
    access: bool = False

    def __post_init__(self) -> None:
        if self.level not in LOG_LEVELS:
            raise ConfigError(f"log.level: expected one of {', '.join(LOG_LEVELS)}, "
                              f"got {self.level!r}")  # fmt: skip
        if self.format not in LOG_FORMATS:
            raise ConfigError(f"log.format: expected text or json, got {self.format!r}")


@dataclass(frozen=True)
class Config:
    http: HttpConfig = field(default_factory=HttpConfig)
    media: MediaConfig = field(default_factory=MediaConfig)
    ice: IceConfig = field(default_factory=IceConfig)
    rooms: RoomsConfig = field(default_factory=RoomsConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    workers: WorkersConfig = field(default_factory=WorkersConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    log: LogConfig = field(default_factory=LogConfig)

    def replace(self, **sections: Mapping[str, Any]) -> Config:
        """A copy with some keys changed: `config.replace(http={"port": 0})`."""
        changes = {}
        for name, values in sections.items():
            current = getattr(self, name)
            changes[name] = _build_section(name, type(current), values, base=current)
        return dataclasses.replace(self, **changes)


def _section_types() -> dict[str, type]:
    hints = typing.get_type_hints(Config)
    return {f.name: hints[f.name] for f in dataclasses.fields(Config)}


def _coerce(where: str, hint: Any, value: Any) -> Any:
    """Check a TOML value against a field's type (ints are accepted where floats are)."""
    origin = typing.get_origin(hint)
    if origin in (list, types.GenericAlias) or origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        return [_coerce(f"{where}[{i}]", item, v) for i, v in enumerate(value)]
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if hint is str and where == "workers.local" and isinstance(value, int):
        return str(value)  # `local = 2` in TOML: a number is fine where "auto" also is
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported type {hint!r}")  # pragma: no cover - our bug


def _parse_env(where: str, hint: Any, raw: str) -> Any:
    """Environment values are strings: parse them to the field's type."""
    try:
        if hint is int:
            return int(raw)
        if hint is float:
            return float(raw)
        if hint is bool:
            lowered = raw.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if typing.get_origin(hint) is list:
            return [part.strip() for part in raw.split(",") if part.strip()]
    except ValueError as exc:
        raise ConfigError(f"{where}: cannot parse {raw!r}") from exc
    return raw


def _build_section(name: str, cls: type, values: Mapping[str, Any], base: Any = None) -> Any:
    if not isinstance(values, Mapping):
        raise ConfigError(f"[{name}] must be a table")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    for key in values:
        if key not in known:
            raise ConfigError(f"unknown key '{name}.{key}'")
    kwargs = {key: _coerce(f"{name}.{key}", hints[key], v) for key, v in values.items()}
    if base is None:
        return cls(**kwargs)
    return dataclasses.replace(base, **kwargs)


def load_config(
    path: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> Config:
    """Load `path` (TOML; None means defaults only) and apply `ARBITER_<SECTION>_<KEY>` overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"config file not found: {path}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
    sections = _section_types()
    for name in data:
        if name not in sections:
            raise ConfigError(f"unknown section '[{name}]'")
    env = os.environ if env is None else env
    built: dict[str, Any] = {}
    for name, cls in sections.items():
        values = dict(data.get(name, {}))
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            var = f"ARBITER_{name.upper()}_{f.name.upper()}"
            if var in env:
                values[f.name] = _parse_env(var, hints[f.name], env[var])
        built[name] = _build_section(name, cls, values)
    prefixes = tuple(f"ARBITER_{name.upper()}_" for name in sections)
    known = _known_env_vars()
    for var in env:
        # A misspelt override of a real section would otherwise be ignored without a word.
        if var.startswith(prefixes) and var not in known:
            raise ConfigError(f"unknown environment override '{var}'")
    return Config(**built)


def _known_env_vars() -> set[str]:
    names = set()
    for name, cls in _section_types().items():
        for f in dataclasses.fields(cls):
            names.add(f"ARBITER_{name.upper()}_{f.name.upper()}")
    return names


# -- checks that read the machine, and what `arbiter check` prints --------------------------------


def check_files(config: Config) -> None:
    """The files the configuration names exist and hold what they should: the TLS certificate
    and key (PEM, and a key that belongs to the certificate). One ConfigError naming the key."""
    http = config.http
    if not http.tls_cert:
        return
    texts = {}
    for key, path in (("http.tls_cert", http.tls_cert), ("http.tls_key", http.tls_key)):
        try:
            texts[key] = Path(path).read_text(encoding="ascii", errors="replace")
        except FileNotFoundError:
            raise ConfigError(f"{key}: no such file: {path}") from None
        except OSError as exc:
            raise ConfigError(f"{key}: cannot read {path}: {exc.strerror or exc}") from None
    if "-----BEGIN CERTIFICATE-----" not in texts["http.tls_cert"]:
        raise ConfigError(f"http.tls_cert: no PEM certificate in {http.tls_cert}")
    if "PRIVATE KEY-----" not in texts["http.tls_key"]:
        raise ConfigError(f"http.tls_key: no PEM private key in {http.tls_key}")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(http.tls_cert, http.tls_key)
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" in str(exc):
            raise ConfigError(
                f"http.tls_key: {http.tls_key} is not the key of the certificate in {http.tls_cert}"
            ) from None
        raise ConfigError(
            f"http.tls_cert: cannot load {http.tls_cert} with {http.tls_key}: {exc.reason or exc}"
        ) from None


def bind_error(key: str, proto: str, host: str, port: int, exc: OSError) -> StartupError:
    """The one line for a socket that could not be bound, naming the key (`x.port`; an address
    this host does not have names the address key beside it) and the port."""
    where = f"{proto} port {port} on {host}"
    if exc.errno == errno.EADDRINUSE:
        return StartupError(f"{key}: {where} is already in use (another server running?)")
    if exc.errno == errno.EACCES:
        return StartupError(
            f"{key}: {where}: permission denied (ports below 1024 need CAP_NET_BIND_SERVICE)"
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        host_key = "http.host" if key == "http.port" else "media.listen"
        return StartupError(f"{host_key}: {host} is not an address of this host")
    return StartupError(f"{key}: cannot bind {where}: {exc.strerror or exc}")


def check_udp_ports(config: MediaConfig, count: int) -> None:
    """Bind and release `media.listen:media.port + i` for i < count (the endpoints bind them
    right after; a wildcard or ephemeral port is checked too: the address must exist)."""
    family = socket.AF_INET6 if ":" in config.listen else socket.AF_INET
    ports = [config.port + i if config.port else 0 for i in range(max(count, 1))]
    if ports[-1] > 65535:
        raise StartupError(f"media.port: {config.port} + {len(ports)} workers is past 65535")
    for port in ports:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            try:
                probe.bind((config.listen, port))
            except OSError as exc:
                raise bind_error("media.port", "UDP", config.listen, port, exc) from None


def _address_kind(ip: str) -> str | None:
    """Why browsers elsewhere cannot reach `ip`, or None for a globally routable address."""
    address = ipaddress.ip_address(ip)
    if address.is_global:
        return None
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    return "private"


def exposure_warning(config: Config, announced: list[str], ports: str) -> str | None:
    """The warning for an announced media address browsers outside this network cannot reach.

    The rule (docs/PROTOCOL.md section 6): some announced address is not globally routable
    (RFC 1918, loopback, link-local, CGNAT, IPv6 ULA, ...) while clients may come from outside:
    `http.host` is a wildcard or a global address, or `limits.trusted_proxies` is set (a proxy
    forwards visitors from anywhere). A server bound to a private address, with no proxy, serves
    its own network only and is not warned about. `ports` names the media port(s)."""
    local = [(ip, kind) for ip in announced if (kind := _address_kind(ip)) is not None]
    if not local:
        return None
    host = config.http.host
    if host in ("0.0.0.0", "::"):
        why = f"http.host {host} accepts clients from any network"
    elif _is_ip(host) and _address_kind(host) is None:
        why = f"http.host {host} is a public address"
    elif config.limits.trusted_proxies:
        why = "limits.trusted_proxies is set (a proxy forwards clients from anywhere)"
    else:
        return None
    which = ", ".join(f"{ip} ({kind})" for ip, kind in local)
    return (
        f"media.announced_ip: {which} is not reachable from other networks but {why}: their "
        f"browsers' media will not arrive unless they relay through TURN; announce this host's "
        f"public address (behind 1:1 NAT the public IP, with udp {ports} forwarded here)"
    )


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def effective_toml(config: Config) -> str:
    """Every key with its effective value (defaults filled in, environment applied), as TOML,
    with secrets masked: what `arbiter check` prints."""
    lines = []
    for section in dataclasses.fields(Config):
        values = getattr(config, section.name)
        lines.append(f"[{section.name}]")
        for f in dataclasses.fields(values):
            value = getattr(values, f.name)
            if f.metadata.get("secret") and value:
                value = MASK
            lines.append(f"{f.name} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string: JSON's escapes are TOML's
    return repr(value)
