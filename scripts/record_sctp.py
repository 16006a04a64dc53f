"""Record the cleartext SCTP packets real data channel stacks exchange with the SFU (issue 11).

Runs a real server and, per stack, a short call in which the deployed client's negotiated
channels "chat" (100) and "features" (110) carry chat both ways and a features change:

- chrome: two Chromium pages (arbiter/testing/dc_browser.py); the first page's association.
- firefox: a Firefox page and a Chromium page on a veth address of this host (Firefox ignores
  loopback candidates; needs root and /usr/bin/firefox-esr); the Firefox page's association.
- aiortc: aiortc's SCTP stack against our association in memory (arbiter/testing/sctp_pair.py)
  with an in-band channel, a large fragmented message and a stream reset.

Every association is made with a fixed secret and random seed, so `tests/test_sctp.py` can feed
the recorded packets back at their recorded times and get the same tags, TSNs and cookies.
Writes tests/data/sctp_<stack>.json: {"secret", "seed", "remote_max_message_size", "start",
"records": [[t, kind, hex], ...]} with t in seconds from "start" (the clock at the first
packet: the state cookie carries the clock, so a replay runs at start + t) and kind "in" (a packet
received), "out" (one we sent), "timer" (handle_timeout), "send" (hex of the JSON of a
`send` call's arguments) or "flush".

Usage: .venv/bin/python scripts/record_sctp.py [chrome] [firefox] [aiortc]
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from pathlib import Path
from random import Random
from typing import Any

import trio

from arbiter.sfu import datachannels
from arbiter.sfu.sctp import SctpAssociation
from arbiter.testing import make_config, new_room, running_server

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"
SECRET = b"arbiter-sctp-recording-secret-00"
SEED = 11


class Recorder:
    """Replaces the SctpAssociation RoomDataChannels makes with a seeded, recording one."""

    def __init__(self) -> None:
        self.sessions: list[dict[str, Any]] = []

    def __enter__(self) -> Recorder:
        self._original = datachannels.SctpAssociation
        datachannels.SctpAssociation = self.make  # type: ignore[assignment,misc]
        return self

    def __exit__(self, *exc: object) -> None:
        datachannels.SctpAssociation = self._original  # type: ignore[misc]

    def make(self, **kwargs: Any) -> SctpAssociation:
        association = SctpAssociation(secret=SECRET, rng=Random(SEED), **kwargs)
        session: dict[str, Any] = {
            "secret": SECRET.hex(), "seed": SEED,
            "remote_max_message_size": kwargs.get("remote_max_message_size", 65536),
            "records": [], "start": None}  # fmt: skip
        self.sessions.append(session)

        def log(now: float, kind: str, data: bytes) -> None:
            if session["start"] is None:
                session["start"] = now
            session["records"].append([round(now - session["start"], 6), kind, data.hex()])

        receive, timeout, flush = (association.receive_untrusted, association.handle_timeout,
                                   association.flush)  # fmt: skip

        def receive_untrusted(data: bytes, now: float) -> list[bytes]:
            log(now, "in", data)
            out = receive(data, now)
            for packet in out:
                log(now, "out", packet)
            return out

        def handle_timeout(now: float) -> list[bytes]:
            log(now, "timer", b"")
            out = timeout(now)
            for packet in out:
                log(now, "out", packet)
            return out

        def flush_(now: float) -> list[bytes]:
            out = flush(now)
            if out:
                log(now, "flush", b"")
            for packet in out:
                log(now, "out", packet)
            return out

        send = association.send

        def send_(stream: int, ppid: int, data: bytes, now: float, **options: Any) -> bool:
            log(now, "send", json.dumps({"stream": stream, "ppid": ppid, "data": data.hex(),
                                         **options}).encode())  # fmt: skip
            return send(stream, ppid, data, now, **options)

        association.send = send_  # type: ignore[method-assign]
        association.receive_untrusted = receive_untrusted  # type: ignore[method-assign]
        association.handle_timeout = handle_timeout  # type: ignore[method-assign]
        association.flush = flush_  # type: ignore[method-assign]
        return association


def save(name: str, session: dict[str, Any], note: str) -> None:
    session = {**session, "note": note}
    path = DATA / f"sctp_{name}.json"
    path.write_text(json.dumps(session, indent=0) + "\n")
    print(f"{path}: {len(session['records'])} records")


async def record_chrome() -> None:
    from arbiter.testing.dc_browser import chat_scenario

    with tempfile.TemporaryDirectory() as tmp, Recorder() as recorder:
        async with running_server(make_config(Path(tmp))) as srv:
            room = await new_room(srv, "record-chrome")
            await trio.to_thread.run_sync(
                lambda: chat_scenario(srv.url, srv.ws_url, room, ["A", "B"]))
        save("chrome", recorder.sessions[0], "Chromium page A: chat both ways on channel 100, "
             "features on 110 (arbiter/testing/dc_browser.py chat_scenario)")


async def record_firefox() -> None:
    from arbiter.testing.dc_browser import chat_scenario
    from arbiter.testing.hostaddr import veth_addresses

    with tempfile.TemporaryDirectory() as tmp, Recorder() as recorder, veth_addresses() as host:
        config = make_config(Path(tmp), media={"listen": "0.0.0.0", "port": 0,
                                               "announced_ip": [host.secondary]})  # fmt: skip
        async with running_server(config) as srv:
            room = await new_room(srv, "record-firefox")
            await trio.to_thread.run_sync(
                lambda: chat_scenario(srv.url, srv.ws_url, room, ["F", "C"], first="firefox"))
        save("firefox", recorder.sessions[0], "Firefox page F: chat both ways on channel 100 "
             "with a Chromium page, features on 110")


async def _aiortc_session() -> dict[str, Any]:
    from aiortc import RTCDataChannel, RTCDataChannelParameters

    from arbiter.testing.sctp_pair import SctpPair

    with Recorder() as recorder:
        pair = SctpPair()
        pair.association = recorder.make(max_message_size=262144, remote_max_message_size=65536)
        from arbiter.sfu.dcep import DataChannels

        pair.server = DataChannels(pair.association)
        await pair.start()
        channel = RTCDataChannel(pair.client, RTCDataChannelParameters(label="inband"))
        chat = RTCDataChannel(pair.client, RTCDataChannelParameters(
            label="chat", negotiated=True, id=100))  # fmt: skip
        await asyncio.sleep(0.1)
        channel.send("hello")
        channel.send(b"\x00" * 5000)
        chat.send(json.dumps({"content": "hi"}))
        await asyncio.sleep(0.2)
        ours = pair.server.channels[channel.id]
        pair.server.send(ours, b"reply", False, pair.now())
        pair.flush()
        await asyncio.sleep(0.1)
        channel.close()
        await asyncio.sleep(0.3)
        await pair.close()
        return recorder.sessions[0]


def main(argv: list[str]) -> int:
    which = argv or ["chrome", "aiortc"]
    if "chrome" in which:
        trio.run(record_chrome)
    if "firefox" in which:
        trio.run(record_firefox)
    if "aiortc" in which:
        save("aiortc", asyncio.run(_aiortc_session()),
             "aiortc's RTCSctpTransport in memory: an in-band channel (5000-byte message, "
             "reply, close by stream reset) and negotiated chat 100")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
