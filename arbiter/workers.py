"""SFU workers as the gateway sees them: who is attached, how loaded, where a room goes.

With `workers.local` other than 0, rooms do not run inside the gateway process: each live room
is placed on an attached SFU worker (`arbiter sfu`, docs/PROTOCOL.md section 1), the least
loaded one by participants, then forwarded packets per second, then rooms. The worker is told
`startRoom`; the room's SFU then identifies over its own WebSocket like any room SFU. When a
worker goes away its rooms are placed again on another one, and their clients, who got
`sfuDisconnect` when the room SFU's socket closed, rejoin.

`arbiter serve` also starts the local workers: `arbiter sfu` child processes, worker i on UDP
`media.port + i`, restarted with back-off when they exit, and dying with the server.
"""

from __future__ import annotations

import logging
import os
import secrets
import sys
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import trio

from .config import Config
from .peer import Peer

log = logging.getLogger(__name__)

LOCAL_PREFIX = "local-"


@dataclass
class WorkerInfo:
    id: str
    peer: Peer
    capacity: dict[str, Any]
    rooms: set[int] = field(default_factory=set)
    participants: int = 0
    pps: int = 0
    # The worker's media counters and tables from its last load report (for /metrics).
    counters: dict[str, int] = field(default_factory=dict)
    tables: dict[str, int] = field(default_factory=dict)
    process: dict[str, int] = field(default_factory=dict)  # cpu_ms, rss_bytes, open_fds, ...
    gone: trio.Event = field(default_factory=trio.Event)

    @property
    def local(self) -> bool:
        return self.id.startswith(LOCAL_PREFIX)

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "local": self.local,
            "rooms": len(self.rooms),
            "participants": self.participants,
            "pps": self.pps,
        }


class WorkerPool:
    def __init__(self) -> None:
        self.workers: dict[str, WorkerInfo] = {}
        self.changed = trio.Event()

    def attached(self, worker_id: str, peer: Peer, capacity: dict[str, Any]) -> None:
        self.workers[worker_id] = WorkerInfo(worker_id, peer, capacity)
        log.info("SFU worker %s attached", worker_id, extra={"worker": worker_id})
        self._wake()

    def load(self, worker_id: str, load: dict[str, Any]) -> None:
        worker = self.workers.get(worker_id)
        if worker is None:
            return
        for key in ("participants", "pps"):
            value = load.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                setattr(worker, key, value)
        for key in ("counters", "tables", "process"):
            value = load.get(key)
            if isinstance(value, dict) and len(value) <= 256:
                clean = {
                    str(k)[:64]: v
                    for k, v in value.items()
                    if isinstance(v, int) and not isinstance(v, bool) and v >= 0
                }
                setattr(worker, key, clean)

    def gone(self, worker_id: str, stopping: bool = False) -> None:
        """The worker's control connection closed: its rooms move (`stopping`: the server is
        shutting down, which is no news worth a warning)."""
        worker = self.workers.pop(worker_id, None)
        if worker is not None:
            log.log(logging.INFO if stopping else logging.WARNING,
                    "SFU worker %s gone; its %d rooms move", worker_id, len(worker.rooms),
                    extra={"worker": worker_id})  # fmt: skip
            worker.gone.set()
            self._wake()

    def pick(self) -> WorkerInfo | None:
        """The least loaded worker: participants, then packets per second, then rooms."""
        if not self.workers:
            return None
        return min(self.workers.values(), key=lambda w: (w.participants, w.pps, len(w.rooms), w.id))

    async def wait_changed(self) -> None:
        await self.changed.wait()

    def _wake(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    def sum_counters(self, own: Mapping[str, int]) -> dict[str, int]:
        """This process's media counters plus every attached worker's (its last report)."""
        total: Counter[str] = Counter(own)
        for worker in self.workers.values():
            total.update(worker.counters)
        return dict(total)

    def sum_tables(self, own: Mapping[str, float]) -> dict[str, float]:
        total = dict(own)
        for worker in self.workers.values():
            for key, value in worker.tables.items():
                total[key] = total.get(key, 0) + value
        return total

    def describe(self) -> list[dict[str, Any]]:
        return [w.describe() for w in sorted(self.workers.values(), key=lambda w: w.id)]


def local_token(config: Config) -> str:
    """The token local workers present: workers.token, or a fresh random one per boot (then
    remote workers, who cannot know it, are refused)."""
    return config.workers.token or secrets.token_urlsafe(24)


async def run_local_worker(config: Config, index: int, gateway_url: str, token: str) -> None:
    """Keep local worker `index` running: an `arbiter sfu` child process, restarted with
    back-off. Its media settings come from the gateway's config through the environment."""
    media = config.media
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARBITER_")}
    env.update(
        ARBITER_MEDIA_LISTEN=media.listen,
        ARBITER_MEDIA_PORT=str(media.port + index if media.port else 0),
        ARBITER_MEDIA_ANNOUNCED_IP=",".join(media.announced_ip),
        ARBITER_MEDIA_CONSENT_TIMEOUT=str(media.consent_timeout),
        ARBITER_MEDIA_VIDEO_CODEC=media.video_codec,
        # The workers log like the gateway (their stderr is the gateway's).
        ARBITER_LOG_LEVEL=config.log.level,
        ARBITER_LOG_FORMAT=config.log.format,
        # In the environment, not on the command line: `ps` shows arguments to everyone.
        ARBITER_WORKERS_TOKEN=token,
    )
    # --parent: the worker exits when this process is gone, however it went (a SIGKILLed server
    # must not leave workers retrying forever). Not PR_SET_PDEATHSIG: trio spawns from a worker
    # thread, and the signal follows that thread's exit, not the process's.
    command = [
        sys.executable, "-m", "arbiter.cli", "sfu",
        "--gateway", gateway_url, "--id", f"{LOCAL_PREFIX}{index}",
        "--parent", str(os.getpid()),
    ]  # fmt: skip
    backoff = 0.5
    while True:
        started = trio.current_time()
        result = await trio.run_process(command, env=env, check=False)
        log.warning("local SFU worker %d exited (status %s); restarting", index, result.returncode)
        if trio.current_time() - started > 30:
            backoff = 0.5
        await trio.sleep(backoff)
        backoff = min(backoff * 2, 10.0)
