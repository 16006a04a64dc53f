"""The Arbiter target: `arbiter serve` in its own process, participants over its WebSocket API.

Each synthetic participant speaks the real wire contract (docs/PROTOCOL.md sections 3 and 4):
identify, a producer offer for its audio and video, and an answer to every consumer offer the
SFU sends; media legs do real ICE, DTLS and SRTP (`engine.Leg`).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx
import trio
from trio_websocket import ConnectionClosed

from ..sfu.dtls import Certificate
from ..testing.signaling import WsClient, consumer_offer, is_error, producer_answer, ws_client
from . import feedback, procstat, sdp_client, simulcast
from .engine import Leg
from .participant import Participant, Target


def workers_available() -> bool:
    """Does this build's config accept `workers.local` (local SFU worker processes)?"""
    import dataclasses

    from ..config import WorkersConfig

    return "local" in {f.name for f in dataclasses.fields(WorkersConfig)}


class ArbiterTarget(Target):
    name = "arbiter"

    def __init__(
        self,
        *,
        media_port: int = 0,
        cpu: int | str | None = None,
        workers: int = 0,
        name: str = "arbiter",
    ) -> None:
        self.media_port = media_port
        self.cpu = cpu  # pin the server to this core or cores (taskset), as the benchmark does
        self.name = name
        # `workers.local` SFU worker processes, written only when this build's config has it.
        self.workers = workers if workers and workers_available() else 0
        self.url = ""
        self.process: subprocess.Popen[bytes] | None = None
        self._rooms = 0

    @property
    def pids(self) -> list[int]:
        return [self.process.pid] if self.process is not None else []

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with tempfile.TemporaryDirectory(prefix="arbiter-bench-") as tmp:
            config = Path(tmp) / "arbiter.toml"
            config.write_text(
                '[http]\nhost = "127.0.0.1"\nport = 0\n'
                f'[media]\nlisten = "127.0.0.1"\nport = {self.media_port}\n'
                'announced_ip = ["127.0.0.1"]\n'
                "[rooms]\nidle_pool = 0\nmax_rooms = 1000\nmax_participants = 64\n"
                # Every room of a benchmark is created from this one address.
                "[limits]\ncreate_room_per_minute = 0\nrooms_per_address = 0\n"
                f'[store]\npath = "{tmp}/arbiter.db"\n'
                # Rooms in this one process unless the scenario asks for workers (the default
                # is one worker per core).
                + (f"[workers]\nlocal = {self.workers}\n" if workers_available() else "")
            )
            env = {k: v for k, v in os.environ.items() if not k.startswith("ARBITER_")}
            command = [sys.executable, "-m", "arbiter.cli", "serve", "--config", str(config)]
            async with procstat.server_process(
                command, ready=b"listening on ", cpu=self.cpu, env=env
            ) as (process, line):
                self.process = process
                self.url = line.split("listening on ", 1)[1].strip()
                task_status.started()
                await trio.sleep_forever()

    async def new_room(self) -> Any:
        self._rooms += 1
        async with httpx.AsyncClient(base_url=self.url, timeout=20) as http:
            room_id = (await http.put("/createRoom")).json()["roomId"]
            await http.patch("/claimRoom", json={"urlPath": f"bench-{self._rooms}"})
        return int(room_id)

    def participant(self, room: Any, number: int, certificate: Certificate) -> Participant:
        return ArbiterParticipant(self, int(room), number, certificate)


class ArbiterParticipant(Participant):
    def __init__(
        self, target: ArbiterTarget, room_id: int, number: int, certificate: Certificate
    ) -> None:
        super().__init__(number, certificate)
        self.target = target
        self.room_id = room_id
        self.ws: WsClient | None = None
        self.messages: list[dict[str, Any]] = []  # every frame received, in order
        self.close_code: int | None = None  # set when the server closed the WebSocket
        self._answer: trio.MemorySendChannel[str] | None = None
        self._answers: trio.MemoryReceiveChannel[str] | None = None
        self.layer_frames: list[tuple[float, list[str]]] = []  # `layers` frames: when, what

    async def join(self, nursery: trio.Nursery, publish: bool) -> None:
        ws_url = self.target.url.replace("http://", "ws://") + "/ws"
        # The join timer starts before the signaling connection opens, for every target.
        self.joined_at = trio.current_time()
        self.ws = await nursery.start(_open_ws, ws_url)
        self._answer, self._answers = trio.open_memory_channel[str](1)
        await self.ws.send_identify(self.room_id, self.peer_id)
        nursery.start_soon(self._read, nursery)
        if publish:
            leg = self.publisher_leg = Leg(self.certificate)
            me = leg.local_credentials()
            if self.simulcast:
                offer = simulcast.build_simulcast_offer(
                    me.ufrag, me.pwd, me.fingerprint, self.audio_ssrc, candidate=leg.address,
                    transport_cc=self.transport_cc,
                )  # fmt: skip
            else:
                offer = sdp_client.build_publisher_offer(
                    me.ufrag, me.pwd, me.fingerprint, self.audio_ssrc, self.video_ssrc,
                    candidate=leg.address, transport_cc=self.transport_cc,
                )  # fmt: skip
            await self.ws.send_offer(offer, room_id=self.room_id)
            with trio.fail_after(10):
                answer = await self._answers.receive()
            leg.attach_remote(sdp_client.remote_media_params(answer))
            await leg.connect()
            nursery.start_soon(leg.keep_consent, self.stop)

    async def subscribe_to(self, other: Participant) -> None:
        """The SFU offers every publisher by itself (docs/PROTOCOL.md section 4): nothing to ask
        for."""

    async def send_preferences(self, data: dict[str, Any]) -> None:
        assert self.ws is not None
        await self.ws.send("preferences", data)

    async def leave(self) -> None:
        if self.ws is not None:
            with trio.move_on_after(2):
                await self.ws.send("disconnect", {})
                await self.ws.aclose()
        self.close_legs()

    async def _read(self, nursery: trio.Nursery) -> None:
        assert self.ws is not None and self._answer is not None
        while True:
            try:
                message = await self.ws.recv(timeout=None)
            except ConnectionClosed as exc:
                self.close_code = exc.reason.code
                return
            except Exception:
                return
            self.messages.append(message)
            if (answer := producer_answer(message)) is not None:
                await self._answer.send(answer)
            elif (offer := consumer_offer(message)) is not None:
                nursery.start_soon(self._consume, *offer)
            elif message.get("type") == "layers" and self.publisher_leg is not None:
                # The rids anyone receives: the others stop, as a browser's encodings do
                # through setParameters (docs/PROTOCOL.md section 4, Quality).
                active = message.get("active")
                if message.get("mid") == simulcast.VIDEO_MID and isinstance(active, list):
                    self.publisher_leg.active_rids = {str(rid) for rid in active}
                    self.layer_frames.append((trio.current_time(), sorted(active)))
            elif is_error(message):
                self.errors.append(message)

    async def _consume(self, publisher_id: str, offer: str) -> None:
        leg = Leg(self.certificate)
        leg.twcc_id = feedback.twcc_extension_id(offer)  # follow the SDP (Arbiter: none yet)
        remote = sdp_client.remote_media_params(offer)
        leg.offered = remote.ssrcs
        me = leg.prepare(remote)
        answer = sdp_client.build_subscriber_answer(
            offer, me.ufrag, me.pwd, me.fingerprint, setup="active", candidate=leg.address
        )
        assert self.ws is not None
        await self.ws.send_answer(publisher_id, answer, room_id=self.room_id)
        with trio.fail_after(10):
            await leg.connect()
        self.add_subscription(publisher_id, leg)


async def _open_ws(
    url: str, *, task_status: trio.TaskStatus[WsClient] = trio.TASK_STATUS_IGNORED
) -> None:
    async with ws_client(url, max_message_size=1 << 20) as ws:
        task_status.started(ws)
        await trio.sleep_forever()
