"""Typed configuration: defaults in code, loaded from TOML, overridable from the environment.

Every key of `arbiter.toml` is a field of one of the section dataclasses below. Unknown sections
or keys are errors that name the key (a typo must not silently fall back to a default). Each key
can be overridden by an environment variable `ARBITER_<SECTION>_<KEY>` (upper case), parsed to
the field's type, so containers and systemd units need no edited file.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
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


LOOPBACK = ["127.0.0.1/8", "::1"]


def _check_networks(key: str, values: list[str]) -> None:
    for value in values:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError as exc:
            raise ConfigError(f"{key}: not an address or network: {value!r}") from exc


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
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"http.port: expected 0-65535, got {self.port}")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigError("http.tls_cert and http.tls_key: set both or neither")
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
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"media.port: expected 0-65535, got {self.port}")
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
    turn_secret: str = ""
    # Lifetime of the credentials handed to an identified client (seconds).
    turn_ttl: int = 3600

    def __post_init__(self) -> None:
        for url in self.servers:
            if not url.startswith(("stun:", "stuns:", "turn:", "turns:")) or len(url) < 6:
                raise ConfigError(
                    f"ice.servers: expected a stun:, stuns:, turn: or turns: URL, got {url!r}"
                )
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
    token: str = ""
    # Local SFU worker processes `arbiter serve` starts: "auto" (one per core), a number, or 0
    # (rooms run inside the gateway process). Worker i listens on UDP media.port + i.
    local: str = "auto"

    def __post_init__(self) -> None:
        if self.local != "auto" and not (self.local.isdigit() and int(self.local) <= 64):
            raise ConfigError(f"workers.local: expected \"auto\" or 0-64, got {self.local!r}")

    def count(self) -> int:
        """How many local workers to start."""
        return (os.cpu_count() or 1) if self.local == "auto" else int(self.local)


@dataclass(frozen=True)
class StoreConfig:
    path: str = "arbiter.db"


@dataclass(frozen=True)
class Config:
    http: HttpConfig = field(default_factory=HttpConfig)
    media: MediaConfig = field(default_factory=MediaConfig)
    ice: IceConfig = field(default_factory=IceConfig)
    rooms: RoomsConfig = field(default_factory=RoomsConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    workers: WorkersConfig = field(default_factory=WorkersConfig)
    store: StoreConfig = field(default_factory=StoreConfig)

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
