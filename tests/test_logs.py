"""Logs an operator can use (docs/PROTOCOL.md section 6): the start-up summary, rooms created,
claimed and closed, each peer's join, media connection and departure by room and peer id (never
names or chat text), JSON lines that parse, and the access log."""

from __future__ import annotations

import io
import json
import logging
import re
from pathlib import Path

import pytest
import trio

from arbiter import logs
from arbiter.testing.serve import served
from arbiter.testing.server import SfuRegistry, make_config, new_room, running_server
from arbiter.testing.signaling import ws_client

STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ")


def lines_of(caplog: pytest.LogCaptureFixture, *loggers: str) -> list[str]:
    """The captured INFO+ records of `loggers` as the text format has them, without the time."""
    return [f"{r.levelname} {r.name}: {r.getMessage()}" for r in caplog.records
            if r.name in loggers and r.levelno >= logging.INFO]  # fmt: skip


async def test_a_session_of_four_writes_its_lines(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Four people join, their media connects, they leave four different ways: one line each
    time, with ids and counts and why, and nobody's name or chat text."""
    caplog.set_level(logging.INFO)
    sfus = SfuRegistry()
    async with running_server(make_config(tmp_path), sfus) as srv:
        room = await new_room(srv, "team-standup")
        sfu = sfus.sfus[room]
        async with (
            ws_client(srv.ws_url) as alice,
            ws_client(srv.ws_url) as bob,
            ws_client(srv.ws_url) as carol,
            ws_client(srv.ws_url) as dave,
        ):
            for client, peer_id in ((alice, "a1"), (bob, "b2"), (carol, "c3"), (dave, "d4")):
                await client.identify_client(room, peer_id, f"Secret Name {peer_id}")
            await alice.send("chat", {"content": "the secret chat text"})
            await alice.recv_type("chat")
            for peer_id in ("a1", "b2", "c3", "d4"):
                await sfu.link.send({"action": "room", "data": {"type": "mediaUp", "id": peer_id}})
            await sfu.link.send({"action": "room", "data": {"type": "mediaUp", "id": "a1"}})
            await alice.send("disconnect")
            await alice.drain()
            await bob.aclose()
            await sfu.link.send({"action": "disconnect", "data": {"clientId": "c3"}})
            await carol.drain()
            with trio.fail_after(5):
                while srv.server.gateway.client_count(room) != 1:  # type: ignore[union-attr]
                    await trio.sleep(0.01)
            r = await srv.http.post(f"/admin/rooms/{room}/close")
            assert r.status_code == 200
            await dave.drain()
        metrics = (await srv.http.get("/metrics")).text
    got = lines_of(caplog, "arbiter.rooms", "arbiter.gateway")
    pattern = [
        rf"INFO arbiter.rooms: room {room} created \(createRoom\)",
        rf"INFO arbiter.rooms: room {room} claimed",
        rf"INFO arbiter.gateway: room {room}: peer a1 joined \(1 in the room\)",
        rf"INFO arbiter.gateway: room {room}: peer b2 joined \(2 in the room\)",
        rf"INFO arbiter.gateway: room {room}: peer c3 joined \(3 in the room\)",
        rf"INFO arbiter.gateway: room {room}: peer d4 joined \(4 in the room\)",
        # Each client's first mediaUp only (a1's second transport is not news).
        *(rf"INFO arbiter.gateway: room {room}: peer {p} media connected \d+\.\d\d s after "
          r"joining" for p in ("a1", "b2", "c3", "d4")),
        rf"INFO arbiter.gateway: room {room}: peer a1 left after \d+ s, disconnect "
        r"\(3 in the room\)",
        rf"INFO arbiter.gateway: room {room}: peer b2 left after \d+ s, connection closed "
        r"\(2 in the room\)",
        rf"INFO arbiter.gateway: room {room}: peer c3 left after \d+ s, media connection lost "
        r"\(1 in the room\)",
        rf"INFO arbiter.rooms: room {room} closed: closed by an operator",
        rf"INFO arbiter.gateway: room {room}: peer d4 left after \d+ s, room closed "
        r"\(0 in the room\)",
    ]  # fmt: skip
    assert len(got) == len(pattern), "\n".join(got)
    for line, expected in zip(got, pattern, strict=True):
        assert re.fullmatch(expected, line), (line, expected)
    everything = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert "Secret Name" not in everything and "secret chat" not in everything
    assert "team-standup" not in everything  # room names let their reader into the call
    # The join time of each of the four, once.
    assert "arbiter_join_seconds_count 4.0" in metrics.splitlines()
    joined = [r for r in caplog.records if r.getMessage().endswith("joined (1 in the room)")]
    assert logs.fields(joined[0]) == {
        "room": room, "peer": "a1", "participants": 1, "moderator": False,
    }  # fmt: skip


def test_json_lines_carry_the_fields() -> None:
    stream = io.StringIO()
    logs.setup("info", "json", stream)
    try:
        log = logging.getLogger("arbiter.gateway")
        log.info("room %d: peer %s joined", 5, "a", extra={"room": 5, "peer": "a"})
        log.debug("not at info")
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("it broke", extra={"room": 6})
    finally:
        logs.setup("info", "text")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first.pop("ts"))
    assert first == {
        "level": "INFO", "logger": "arbiter.gateway", "message": "room 5: peer a joined",
        "room": 5, "peer": "a",
    }  # fmt: skip
    assert second["level"] == "ERROR" and second["room"] == 6
    assert second["exc"].startswith("Traceback") and second["exc"].endswith("ValueError: boom")


async def test_start_up_summary_and_json_format(tmp_path: Path) -> None:
    async with served(tmp_path, stderr=True) as srv:
        text = [STAMP.sub("", line) for line in srv.log().splitlines()]
    port = srv.url.rsplit(":", 1)[1]
    summary = [line for line in text if line.startswith("INFO arbiter.server: ")]
    assert summary[0] == f"INFO arbiter.server: listening on http://127.0.0.1:{port}"
    assert re.fullmatch(
        r"INFO arbiter.server: media: UDP \d+ on 127.0.0.1, announced as 127.0.0.1", summary[1]
    ), summary
    assert summary[2] == (
        "INFO arbiter.server: workers: none, rooms run in this process (workers.local = 0)"
    )
    # Loopback only, announced loopback: no exposure warning; nothing from hypercorn at INFO.
    assert not [line for line in text if line.startswith(("WARNING", "ERROR"))], text
    assert not [line for line in text if "hypercorn" in line], text

    async with served(tmp_path, '[log]\nformat = "json"', name="json", stderr=True) as srv:
        r = await srv.http.put("/createRoom")
        assert r.status_code == 200
        raw = srv.log().splitlines()
    records = [json.loads(line) for line in raw]  # every line is one JSON object
    assert all({"ts", "level", "logger", "message"} <= set(r) for r in records)
    media = next(r for r in records if r["message"].startswith("media: UDP"))
    assert media["announced"] == ["127.0.0.1"] and media["media_ports"].isdigit()
    created = [r for r in records if r["message"].endswith("created (createRoom)")]
    assert created[0]["room"] == r.json()["roomId"] and created[0]["logger"] == "arbiter.rooms"


async def test_access_log(tmp_path: Path) -> None:
    async with served(tmp_path, "[log]\naccess = true", stderr=True) as srv:
        assert (await srv.http.get("/health")).status_code == 200
        with trio.fail_after(5):
            while "/health" not in srv.log():
                await trio.sleep(0.05)
        text = [STAMP.sub("", line) for line in srv.log().splitlines()]
    access = [line for line in text if line.startswith("INFO arbiter.access: ")]
    assert len(access) == 1, text
    assert re.fullmatch(
        r'INFO arbiter.access: 127\.0\.0\.1:\d+ "GET /health 1\.1" 200 \d+ \d+us', access[0]
    ), access
    # Off by default.
    async with served(tmp_path, name="quiet", stderr=True) as srv:
        assert (await srv.http.get("/health")).status_code == 200
        await trio.sleep(0.2)
        assert "arbiter.access" not in srv.log()
