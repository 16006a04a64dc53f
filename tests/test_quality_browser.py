"""Issue 13 ("Show") in real Chromium pages through a real server: a paused tile receives no
video while its audio keeps flowing (and the SFU holds the relayed preferences), and the page
whose fake microphone is loudest becomes the large tile within 2 s and stays while it talks.

What a page receives is read from its own `getStats()` (every RTCPeerConnection the page makes,
recorded by thin_link's tracker), per publisher and kind; the SFU's side through the server
objects `running_server` hands out (read in trio's thread).
"""

from __future__ import annotations

import math
import struct
import time
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from arbiter.testing import make_config, running_server
from arbiter.testing.browser import no_leaked_threads, poll, require_chromium
from arbiter.testing.thin_link import track_peer_connections
from arbiter.testing.webpage import (
    MEDIA_TIMEOUT,
    Page,
    inbound_by_peer,
    inbound_count,
    run_browsers,
    run_pages,
)

pytestmark = [pytest.mark.browser, pytest.mark.media]

MIC_OFF = "localStorage.setItem('arbiter.micOn', 'false');"
CAMERA_OFF = "localStorage.setItem('arbiter.camOn', 'false');"

SETTLE_MAX = 2.0  # s: a paused tile's last video packet arrives within this
QUIET = 5.0  # s: and then none for at least this long
RESUME_MAX = 5.0  # s: a tile shown again decodes new frames within this
SPEAKER_MAX = 2.0  # s: the loud page is the large tile within this of its audio arriving
SPEAKER_HOLD = 10.0  # s: and stays so
VOICE = 0.01  # inbound audioLevel (0..1) above which the talker is heard: -40 dBFS


@pytest.fixture(autouse=True)
def _threads() -> Iterator[None]:
    with no_leaked_threads():
        yield


def setup(*, mic: bool = True, camera: bool = True) -> Any:
    """A `Page` setup hook: the connection tracker, microphone and camera as the person left
    them last time (the web client's localStorage)."""

    def hook(context: Any) -> None:
        track_peer_connections(context)
        if not mic:
            context.add_init_script(MIC_OFF)
        if not camera:
            context.add_init_script(CAMERA_OFF)

    return hook


def join(page: Page, name: str) -> str:
    page.join(name)
    return str(page.wait_joined()["id"])


# ------------------------------------------------------------------------- the paused tile


def video_consumers(srv: Any, room_id: int, subscriber: str, publisher: str) -> dict[str, Any]:
    """The SFU's view of `subscriber`'s connection for `publisher` (run in trio's thread): the
    relayed preferences and, per video consumer, paused and bytes forwarded (simulcast)."""
    room = srv.server.media.rooms[room_id]
    subscription = room.subscriptions[(subscriber, publisher)]
    routes = room.router.transports[subscription.transport]
    consumers = [c for c in set(routes.consumers.values()) if c.producer.kind == "video"]
    return {
        "preferences": room.preferences.get((subscriber, publisher)),
        "consumers": [
            {
                "type": type(c).__name__,
                "paused": c.paused,
                "octets": getattr(c, "octets", None),
            }
            for c in consumers
        ],
    }


async def test_paused_tile_receives_no_video_but_audio(tmp_path: Path) -> None:
    """A subscriber scrolls publisher A's tile out of view: after a settling time of at most
    2 s its connection for A receives exactly 0 video packets for 5 s while A's audio keeps
    arriving (and B's video, still on screen, too); the SFU holds A's tile as paused and
    forwards it nothing. Scrolled back, A's video decodes again within 5 s."""
    require_chromium()
    seen: dict[str, Any] = {}
    async with running_server(make_config(tmp_path)) as srv:
        token = trio.lowlevel.current_trio_token()
        url = srv.url + "/quality-paused"

        def body(browser: Any) -> None:
            pages: dict[str, Page] = {}
            try:
                # A talks (the fake microphone) and shows its camera; B only shows its camera
                # (never the active speaker, so A stays the large tile, first); S watches.
                pages["A"] = a = Page(browser, url, "A", setup=setup())
                ids = {"A": join(a, "Alice")}
                pages["B"] = b = Page(browser, url, "B", setup=setup(mic=False))
                ids["B"] = join(b, "Bob")
                pages["S"] = s = Page(browser, url, "S", setup=setup(mic=False, camera=False))
                ids["S"] = join(s, "Sub")
                room_id = int(s.state()["roomId"])
                poll(
                    lambda: s.decoding({ids["A"], ids["B"]}),
                    timeout=MEDIA_TIMEOUT,
                    interval=0.25,
                    what=f"S decoding A and B: {s.describe()}",
                )

                def sfu() -> dict[str, Any]:
                    return trio.from_thread.run_sync(
                        video_consumers, srv, room_id, ids["S"], ids["A"], trio_token=token
                    )

                def sent() -> dict[str, Any]:
                    return {p["id"]: p["sent"] for p in s.state()["preferences"]}

                poll(
                    lambda: (p := sent()).get(ids["A"]) and not p[ids["A"]]["paused"],
                    timeout=5,
                    what=f"S's first preferences for A: {s.state()['preferences']}",
                )
                seen["before"] = {"sent": sent(), "sfu": sfu()}
                # Video flows before: A's over 2 s (the rate it then stops from).
                first = inbound_by_peer(s)
                s.page.wait_for_timeout(2000)
                seen["flowing"] = inbound_count(
                    inbound_by_peer(s), ids["A"], "video", "packetsReceived"
                ) - inbound_count(first, ids["A"], "video", "packetsReceived")

                # The window gets short, the tiles overflow the grid and the person scrolls
                # the grid down: A's (large, first) tile leaves the view.
                s.page.set_viewport_size({"width": 960, "height": 100})
                grid = s.page.locator("#grid").bounding_box()
                assert grid is not None
                s.page.mouse.move(grid["x"] + grid["width"] / 2, grid["y"] + grid["height"] / 2)
                samples: list[tuple[float, Any]] = []
                t0 = time.monotonic()
                s.page.mouse.wheel(0, 2000)
                # Sampled every 0.1 s: the settling time is the first sample at the count the
                # video stays at; then 5 s more of it.
                while True:
                    samples.append((time.monotonic() - t0, inbound_by_peer(s)))
                    now = samples[-1][0]
                    last = inbound_count(samples[-1][1], ids["A"], "video", "packetsReceived")
                    settled = next(
                        t
                        for t, c in samples
                        if inbound_count(c, ids["A"], "video", "packetsReceived") == last
                    )
                    if now - settled >= QUIET + 0.5 or now > SETTLE_MAX + QUIET + 3:
                        break
                    if now - settled >= 1.0 and "sfu paused" not in seen:
                        seen["sfu paused"] = sfu()  # well inside the quiet window
                    s.page.wait_for_timeout(100)
                seen["sfu end"] = sfu()
                seen["paused samples"] = samples
                seen["paused sent"] = sent()
                seen["grid scrollTop"] = s.page.locator("#grid").evaluate("(g) => g.scrollTop")

                # Back: the window as it was (the tile in view again).
                before = inbound_by_peer(s)
                t1 = time.monotonic()
                s.page.set_viewport_size({"width": 960, "height": 600})
                poll(
                    lambda: (
                        inbound_count(inbound_by_peer(s), ids["A"], "video", "framesDecoded")
                        > inbound_count(before, ids["A"], "video", "framesDecoded")
                    ),
                    timeout=RESUME_MAX + 5,
                    interval=0.1,
                    what="A's video decoding again",
                )
                seen["resumed after"] = round(time.monotonic() - t1, 2)
                seen["resumed sent"] = sent()
                seen["sfu resumed"] = sfu()
                seen["ids"] = ids
                seen["errors"] = s.state()["errors"]
            except BaseException as exc:
                for page in pages.values():
                    exc.add_note(page.describe())
                raise

        with trio.fail_after(75):
            await trio.to_thread.run_sync(run_pages, body)

    ids = seen["ids"]
    a, b = ids["A"], ids["B"]
    samples = seen["paused samples"]

    def counts(kind: str, peer: str, key: str = "packetsReceived") -> list[float]:
        return [inbound_count(c, peer, kind, key) for _, c in samples]

    video = counts("video", a)
    final = video[-1]
    settled_at = next(t for t, v in zip([t for t, _ in samples], video, strict=True) if v == final)
    quiet = [(t, c) for t, c in samples if t >= settled_at]
    quiet_s = quiet[-1][0] - quiet[0][0]
    quiet_video = [inbound_count(c, a, "video", "packetsReceived") for _, c in quiet]
    audio_gain = inbound_count(quiet[-1][1], a, "audio", "packetsReceived") - inbound_count(
        quiet[0][1], a, "audio", "packetsReceived"
    )
    b_gain = inbound_count(quiet[-1][1], b, "video", "packetsReceived") - inbound_count(
        quiet[0][1], b, "video", "packetsReceived"
    )
    print(
        f"paused tile: A's video {seen['flowing']:.0f} packets in the 2 s before; settled "
        f"{settled_at:.2f} s after the scroll; then {quiet_s:.1f} s with "
        f"{final - quiet_video[0]:.0f} video packets from A, {audio_gain:.0f} audio packets from A, "
        f"{b_gain:.0f} video packets from B; resumed decoding {seen['resumed after']} s after "
        f"the tile came back; SFU while paused {seen.get('sfu paused')}, at the end "
        f"{seen['sfu end']}"
    )
    assert seen["grid scrollTop"] > 0, seen["grid scrollTop"]  # scrolled: A's tile out of view
    assert settled_at <= SETTLE_MAX, (settled_at, video)
    assert quiet_s >= QUIET, quiet_s
    assert quiet_video == [final] * len(quiet), quiet_video
    assert seen["flowing"] >= 20, seen["flowing"]  # it was flowing: the pause stopped it
    # Opus sends 50 packets/s: audio kept coming the whole time (allowing a loaded machine's
    # sampling jitter), and so did B's video.
    assert audio_gain >= 40 * quiet_s, (audio_gain, counts("audio", a))
    assert b_gain > 0, counts("video", b)

    # What the client sent, and what the SFU holds and does with it.
    height = seen["before"]["sent"][a]["maxHeight"]
    assert seen["before"]["sent"][a] == {"remotePeerId": a, "maxHeight": height, "paused": False}
    assert seen["before"]["sfu"]["preferences"] == (height, False)
    # The web client simulcasts: one layer-switching consumer, which counts what it forwards.
    assert [c["type"] for c in seen["before"]["sfu"]["consumers"]] == ["SimulcastConsumer"]
    assert seen["paused sent"][a] == {"remotePeerId": a, "maxHeight": height, "paused": True}
    assert seen["paused sent"][b]["paused"] is False, seen["paused sent"]  # B still in view
    for view in (seen["sfu paused"], seen["sfu end"]):
        assert view["preferences"] == (height, True), view
        assert [c["paused"] for c in view["consumers"]] == [True], view
    # Nothing forwarded to the paused consumer in between.
    assert [c["octets"] for c in seen["sfu end"]["consumers"]] == [
        c["octets"] for c in seen["sfu paused"]["consumers"]
    ]
    assert seen["resumed after"] <= RESUME_MAX, seen["resumed after"]
    assert seen["resumed sent"][a] == {"remotePeerId": a, "maxHeight": height, "paused": False}
    assert seen["sfu resumed"]["preferences"] == (height, False)
    assert [c["paused"] for c in seen["sfu resumed"]["consumers"]] == [False]
    assert seen["errors"] == []


# --------------------------------------------------------------------- the active speaker


def write_tone(path: Path, *, seconds: float = 30.0, hz: float = 440.0, dbfs: float = -6.0,
               rate: int = 48_000) -> Path:  # fmt: skip
    """A mono 16-bit WAV sine at `dbfs` peak: a microphone that talks without a pause."""
    amplitude = 32767 * 10 ** (dbfs / 20)
    frames = bytearray()
    for i in range(int(seconds * rate)):
        frames += struct.pack("<h", round(amplitude * math.sin(2 * math.pi * hz * i / rate)))
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(bytes(frames))
    return path


def tile_of(page: Page, peer: str) -> dict[str, Any] | None:
    return next((t for t in page.state()["tiles"] if t["id"] == peer), None)


async def test_loudest_page_becomes_the_large_tile_within_2_s(tmp_path: Path) -> None:
    """Two listeners join with their microphones off, then a talker whose fake microphone
    plays a continuous -6 dBFS tone (its own Chromium), its microphone off too. On the first
    listener the talker's tile is not the large one (the other listener's came first). The
    talker turns its microphone on: within 2 s of its voice first reaching the listener (the
    listener's inbound audioLevel for it rising from silence), its tile is the active speaker,
    shown large; and it stays so on both listeners for the next 10 s while it talks.

    Measured from the voice and not from the talker's first packet: a talker that joins
    talking is heard by the SFU before the listener's connection for it is up, which would
    hide most of the detection time."""
    require_chromium()
    tone = write_tone(tmp_path / "tone.wav")
    seen: dict[str, Any] = {}
    async with running_server(make_config(tmp_path)) as srv:
        url = srv.url + "/quality-speaker"

        def body(browsers: list[Any]) -> None:
            quiet, loud = browsers
            pages: dict[str, Page] = {}
            try:
                pages["L"] = listener = Page(quiet, url, "L", setup=setup(mic=False, camera=False))
                ids = {"L": join(listener, "Listener")}
                pages["Q"] = other = Page(quiet, url, "Q", setup=setup(mic=False, camera=False))
                ids["Q"] = join(other, "Quiet")
                poll(
                    lambda: (t := tile_of(listener, ids["Q"])) and t["large"],
                    timeout=10,
                    what=f"Q's tile large on L by default: {listener.describe()}",
                )
                pages["T"] = talker = Page(loud, url, "T", setup=setup(mic=False))
                clicked = time.monotonic()
                ids["T"] = join(talker, "Talker")

                def talker_audio() -> dict[str, float]:
                    return inbound_by_peer(listener).get(ids["T"], {}).get("audio", {})

                # The talker's (silent) audio reaches L and its tile is there, not large.
                poll(
                    lambda: talker_audio().get("packetsReceived", 0) > 0,
                    timeout=MEDIA_TIMEOUT,
                    interval=0.1,
                    what=f"T's audio on L: {listener.describe()}",
                )
                seen["join to first packet"] = round(time.monotonic() - clicked, 2)
                listener.page.wait_for_timeout(1000)
                seen["silent"] = {
                    "audio": talker_audio(),
                    "tile": tile_of(listener, ids["T"]),
                    "large": [t["id"] for t in listener.state()["tiles"] if t["large"]],
                }
                # The talker starts talking. Sampled every 0.1 s on L: when its voice first
                # arrives, when its tile first is the active speaker and large.
                unmuted = time.monotonic()
                talker.page.locator("#mic-toggle").click()
                # Bounds that hold whatever the sampling period: the voice arrived after the
                # last sample without it began (`quiet_since`), the tile was large before the
                # first sample showing it ended.
                voiced = shown = None
                quiet_since = unmuted
                trace: list[tuple[float, float, Any]] = []
                deadline = unmuted + 10
                while shown is None or voiced is None:
                    began = time.monotonic()
                    level = talker_audio().get("audioLevel", 0)
                    tile = tile_of(listener, ids["T"])
                    ended = time.monotonic()
                    view = tile and (tile["activeSpeaker"], tile["large"])
                    trace.append((round(began - unmuted, 2), round(level, 3), view))
                    if voiced is None:
                        if level > VOICE:
                            voiced = quiet_since
                        else:
                            quiet_since = began
                    if shown is None and view == (True, True):
                        shown = ended
                    assert ended < deadline, f"T's voice / tile on L: {trace}"
                    listener.page.wait_for_timeout(100)
                seen["unmute to voice"] = round(voiced - unmuted, 2)
                seen["voice to shown"] = round(shown - voiced, 2)
                seen["unmute to shown"] = round(shown - unmuted, 2)
                seen["trace"] = trace
                # It stays the large tile on both listeners while it talks.
                held: list[tuple[float, float, Any, Any]] = []
                end = time.monotonic() + SPEAKER_HOLD
                while time.monotonic() < end:
                    views = [tile_of(p, ids["T"]) for p in (listener, other)]
                    t = round(time.monotonic() - shown, 2)
                    level = round(talker_audio().get("audioLevel", 0), 3)
                    held.append(
                        (t, level, *[v and (v["activeSpeaker"], v["large"]) for v in views])
                    )
                    listener.page.wait_for_timeout(250)
                seen["held"] = held
                seen["large on L"] = [t["id"] for t in listener.state()["tiles"] if t["large"]]
                seen["ids"] = ids
            except BaseException as exc:
                for page in pages.values():
                    exc.add_note(page.describe())
                raise

        with trio.fail_after(75):
            await trio.to_thread.run_sync(
                run_browsers, body, [], [f"--use-file-for-fake-audio-capture={tone}"]
            )

    ids = seen["ids"]
    print(
        f"active speaker: T's first (silent) audio packet on L {seen['join to first packet']} s "
        f"after its Join click; its voice on L {seen['unmute to voice']} s after it unmuted; "
        f"its tile the large active speaker at most {seen['voice to shown']} s after the voice "
        f"arrived "
        f"({seen['unmute to shown']} s after the unmute); held {len(seen['held'])} polls over "
        f"{SPEAKER_HOLD} s, its level on L {min(h[1] for h in seen['held'])}-"
        f"{max(h[1] for h in seen['held'])}; samples after the unmute {seen['trace']}"
    )
    # Before it talked: heard (silence), its tile not the speaker, Q's large.
    silent = seen["silent"]
    assert silent["audio"]["packetsReceived"] > 0 and silent["audio"]["audioLevel"] < 0.001, silent
    assert (silent["tile"]["activeSpeaker"], silent["tile"]["large"]) == (False, False), silent
    assert silent["large"] == [ids["Q"]], silent
    assert seen["voice to shown"] <= SPEAKER_MAX, seen["trace"]
    assert len(seen["held"]) >= SPEAKER_HOLD / 0.25 / 2, seen["held"]  # a loaded machine
    assert [(v1, v2) for _, _, v1, v2 in seen["held"]] == [((True, True), (True, True))] * len(
        seen["held"]
    ), seen["held"]
    # ... while it talks: its voice on L all along (silence is 0; the tone arrives at ~-25 dBFS
    # after the talker's noise suppression and gain control).
    assert min(level for _, level, _, _ in seen["held"]) > VOICE, seen["held"]
    assert seen["large on L"] == [ids["T"]]
