"""The served web client (arbiter/web) in headless Chromium, driven through its DOM.

Pages open `http://127.0.0.1:<port>/<room>`, type a name in the lobby and click Join; the room
is created and claimed by the page itself (the pool is empty: getRoomId 404, claimRoom 404,
createRoom, claimRoom). Everything is *done* through the DOM (buttons, inputs, Enter) and only
*read* through the DOM or the read-only hook `window.arbiter` (`state()`, `stats()`). The
security tests are in tests/test_web_security.py; the page driver is arbiter/testing/webpage.py.

Playwright's sync API runs in one worker thread while trio runs the server; every wait in the
thread is bounded and the browser is closed in a `finally`, so the thread always returns.
"""

from __future__ import annotations

import datetime
import ipaddress
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from arbiter.testing import make_config, running_server
from arbiter.testing.browser import no_leaked_threads, poll, require_chromium
from arbiter.testing.media_peer import open_media_peer
from arbiter.testing.webpage import (
    JOIN_TIMEOUT,
    LEAVE_DEADLINE,
    MEDIA_TIMEOUT,
    Page,
    run_pages,
    wait_decoding,
    wait_settled,
)

pytestmark = [pytest.mark.browser, pytest.mark.media]


@pytest.fixture(autouse=True)
def _threads() -> Iterator[None]:
    with no_leaked_threads():
        yield


# The camera (1280x720) as its three simulcast layers (rids q, h, f).
CAMERA_LAYERS = ((320, 180), (640, 360), (1280, 720))

async def test_three_pages_call_chat_mute_share_leave_rejoin(tmp_path: Path) -> None:
    require_chromium()
    report: dict[str, Any] = {}
    async with running_server(make_config(tmp_path)) as srv:
        url = srv.url + "/web-call"
        token = trio.lowlevel.current_trio_token()

        def drop_websocket(peer_id: str) -> None:
            """Server side: close one client's WebSocket as a crashed proxy would."""
            gateway = srv.server.gateway
            assert gateway is not None
            for peer in list(gateway.peers.values()):
                if peer.peer_id == peer_id:
                    peer.request_close(1012, "service restart")
                    return
            raise AssertionError(f"no connection for {peer_id}")

        def restart_sfu(room_id: int) -> None:
            """Server side: the room's SFU goes away (its supervisor restarts it)."""
            gateway = srv.server.gateway
            assert gateway is not None
            sfus = [p for p in gateway.peers.values() if p.kind == "sfu" and p.room_id == room_id]
            assert len(sfus) == 1, sfus
            sfus[0].request_close(1011, "test: SFU restart")

        def body(browser: Any) -> None:
            pages: dict[str, Page] = {}
            try:
                scenario(browser, pages)
            except BaseException as exc:
                for page in pages.values():
                    exc.add_note(page.describe())
                    page.screenshot(f"web-call-{page.label}-failed")
                raise

        def scenario(browser: Any, pages: dict[str, Page]) -> None:
            started = time.monotonic()
            for label in ("A", "B", "C"):
                pages[label] = Page(browser, url, label)
                pages[label].join(f"Person {label}")
            ids = {label: page.wait_joined()["id"] for label, page in pages.items()}
            assert len(set(ids.values())) == 3
            report["joined"] = time.monotonic() - started

            # Every page decodes the other two's video and receives their audio, and keeps
            # decoding: framesDecoded grows between two samples.
            wait_decoding(pages, ids, MEDIA_TIMEOUT)
            report["decoding"] = time.monotonic() - started
            first = {label: page.stats()["remote"] for label, page in pages.items()}
            time.sleep(1.0)
            second = {label: page.stats()["remote"] for label, page in pages.items()}
            for label in pages:
                for other in pages:
                    if other == label:
                        continue
                    a, b = first[label][ids[other]], second[label][ids[other]]
                    context = f"{label} <- {other}: {a} then {b}"
                    assert b["framesDecoded"] > a["framesDecoded"] > 0, context
                    assert b["packetsReceived"] > a["packetsReceived"] > 0, context
                    assert b["totalSamplesReceived"] > 0, context
                    # One of the camera's simulcast layers (which one: the downlink's choice).
                    assert (b["frameWidth"], b["frameHeight"]) in CAMERA_LAYERS, context
                # The DOM shows the other two by name, plus the self view.
                names = pages[label].page.get_by_test_id("tile-name").all_inner_texts()
                assert sorted(names) == sorted(
                    [f"Person {label} (you)"] + [f"Person {o}" for o in pages if o != label]
                ), names
                assert pages[label].page.locator('[data-testid="tile"].self.mirrored').count() == 1
            for label, page in pages.items():
                page.screenshot(f"web-call-{label}")

            # A mutes: both others show A's muted badge.
            pages["A"].page.get_by_role("button", name="Microphone").click()
            assert pages["A"].page.get_by_test_id("toggle-mic").get_attribute("aria-pressed") == (
                "false"
            )
            for label in ("B", "C"):
                badge = pages[label].tile(ids["A"]).get_by_test_id("badge-muted")
                badge.wait_for(state="visible", timeout=5_000)
            assert pages["B"].tile(ids["B"]).count() == 0  # nobody sees themselves by id

            # A chats (typed, Enter): it arrives on B and C.
            pages["A"].page.get_by_role("button", name="Chat", exact=True).click()
            chat_input = pages["A"].page.get_by_label("Message everyone")
            chat_input.fill("hello from A")
            chat_input.press("Enter")
            for label in ("B", "C"):
                poll(
                    lambda label=label: any(
                        m["content"] == "hello from A" and m["name"] == "Person A"
                        for m in pages[label].state()["chat"]
                    ),
                    timeout=5,
                    what=f"the chat message on {label}",
                )
                log = pages[label].page.get_by_test_id("chat-log")
                assert "hello from A" in log.inner_text()

            # D joins later on a phone-sized screen: it gets the history and the others' media.
            pages["D"] = Page(
                browser,
                url,
                "D",
                viewport={"width": 390, "height": 844},
                device_scale_factor=2,
                is_mobile=True,
                has_touch=True,
            )
            pages["D"].join("Person D")
            ids["D"] = pages["D"].wait_joined()["id"]
            # The history frame follows `identified` and the roster: wait for it, then exactly.
            history = poll(
                lambda: pages["D"].state()["chat"],
                timeout=5,
                what=f"D's chat history: {pages['D'].describe()}",
            )
            assert [(m["name"], m["content"]) for m in history] == [("Person A", "hello from A")]
            poll(
                lambda: pages["D"].decoding({ids["A"], ids["B"], ids["C"]}),
                timeout=MEDIA_TIMEOUT,
                what=f"D decoding A, B, C: {pages['D'].describe()}",
            )
            muted = poll(
                lambda: pages["D"].tile(ids["A"]).get_by_test_id("badge-muted").is_visible(),
                timeout=5,
                what="A's muted badge on D (from the roster)",
            )
            assert muted
            page_width = pages["D"].page.evaluate("document.documentElement.scrollWidth")
            assert page_width <= 390, f"horizontal overflow on a phone: {page_width}px"
            pages["D"].screenshot("web-call-phone")

            # B shares its screen: A, C and D see B's video at a new resolution, where B's tile
            # is on screen; a tile off screen is paused (the phone's strip may not show it).
            pages["B"].page.get_by_role("button", name="Share screen").click()
            poll(lambda: pages["B"].state()["sharing"], timeout=5, what="B sharing")
            on_d = {p["id"]: p["sent"] for p in pages["D"].state()["preferences"]}
            watchers = ("A", "C") + (() if on_d.get(ids["B"], {}).get("paused") else ("D",))
            report["D pauses B"] = not watchers[-1] == "D"
            for label in watchers:
                size = poll(
                    lambda label=label: (
                        (r := pages[label].stats()["remote"].get(ids["B"], {}))
                        and (r.get("frameWidth"), r.get("frameHeight"))
                        not in (*CAMERA_LAYERS, (None, None))
                        and (r["frameWidth"], r["frameHeight"])
                    ),
                    timeout=15,
                    what=f"B's screen on {label}",
                )
                report[f"share on {label}"] = size
                assert size[0] > CAMERA_LAYERS[-1][0], size  # the full-size share encoding
            pages["A"].screenshot("web-call-A-sees-share")
            # ... and back to the camera.
            pages["B"].page.get_by_role("button", name="Share screen").click()
            poll(
                lambda: (
                    (r := pages["A"].stats()["remote"][ids["B"]])
                    and (r["frameWidth"], r["frameHeight"]) in CAMERA_LAYERS
                ),
                timeout=15,
                what="B's camera again on A",
            )

            # C leaves: gone from every other grid within 2 s of the click.
            pages["C"].page.get_by_role("button", name="Leave call").click()
            clicked = time.monotonic()
            for label in ("A", "B", "D"):
                remaining = LEAVE_DEADLINE - (time.monotonic() - clicked)
                poll(
                    lambda label=label: ids["C"] not in pages[label].remote_tile_ids(),
                    timeout=max(remaining, 0.0),
                    interval=0.05,
                    what=f"C's tile to leave {label}'s grid",
                )
            report["leave seen by all"] = time.monotonic() - clicked
            assert pages["C"].page.get_by_role("heading", name="You left the call").is_visible()
            assert pages["C"].state()["phase"] == "left"

            # The server drops B's WebSocket: B says so, rejoins with a new id, and A and D
            # see the old B go and the new B arrive and decode again.
            dropped = time.monotonic()
            trio.from_thread.run_sync(drop_websocket, ids["B"], trio_token=token)
            poll(
                lambda: (
                    "Reconnecting" in pages["B"].state()["banner"]
                    or pages["B"].state()["id"] != ids["B"]
                ),
                timeout=5,
                what="B's reconnecting banner",
            )
            new_b = poll(
                lambda: (s := pages["B"].state())["joined"] and s["id"] != ids["B"] and s["id"],
                timeout=JOIN_TIMEOUT,
                what="B to rejoin",
            )
            for label in ("A", "D"):
                poll(
                    lambda label=label: (
                        pages[label].remote_tile_ids() == {ids["A"], ids["D"], new_b} - {ids[label]}
                    ),
                    timeout=5,
                    what=f"{label}'s grid after B rejoined",
                )
                poll(
                    lambda label=label: pages[label].decoding({new_b}),
                    timeout=MEDIA_TIMEOUT,
                    what=f"{label} decoding the rejoined B",
                )
            report["ws drop to decoding"] = time.monotonic() - dropped

            # The room's SFU goes away: every page gets sfuDisconnect, says so, rejoins (with
            # back-off while the SFU restarts) and decodes the others again.
            before = {label: pages[label].id for label in ("A", "B", "D")}
            restarted = time.monotonic()
            trio.from_thread.run_sync(restart_sfu, pages["A"].state()["roomId"], trio_token=token)
            for label in before:
                poll(
                    lambda label=label: pages[label].state()["id"] != before[label],
                    timeout=JOIN_TIMEOUT,
                    what=f"{label} to rejoin after the SFU restart",
                )
            settled = wait_settled({label: pages[label] for label in before}, MEDIA_TIMEOUT)
            report["errors after the SFU restart"] = {
                label: page.state()["errors"][-3:] for label, page in settled.items()
            }
            report["sfu restart to decoding"] = time.monotonic() - restarted
            report["total"] = time.monotonic() - started

        with trio.fail_after(150):
            await trio.to_thread.run_sync(run_pages, body)
    print(report)


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_https_page_joins_over_wss(tmp_path: Path) -> None:
    require_chromium()
    cert, key = self_signed(tmp_path)
    config = make_config(
        tmp_path,
        http={"host": "127.0.0.1", "port": 0, "tls_cert": str(cert), "tls_key": str(key)},
    )
    seen: dict[str, Any] = {}
    async with running_server(config) as srv:
        assert srv.url.startswith("https://"), srv.url

        def body(browser: Any) -> None:
            page = Page(browser, srv.url + "/secure-room", "S", ignore_https_errors=True)
            try:
                assert page.page.evaluate("window.isSecureContext") is True
                page.join("Secure Sam")
                state = page.wait_joined()
                poll(
                    lambda: (
                        page.page.evaluate(
                            "document.querySelector('[data-testid=tile].self video').videoWidth"
                        )
                        > 0
                    ),
                    timeout=10,
                    what="the self view playing",
                )
                poll(
                    lambda: page.stats()["producer"]["video"]["packetsSent"] > 0,
                    timeout=10,
                    what="the producer sending over the SFU's DTLS",
                )
                protocol = page.page.evaluate(
                    "performance.getEntriesByType('navigation')[0].nextHopProtocol"
                )
                seen.update(state=state, websockets=list(page.websockets), protocol=protocol)
                page.screenshot("web-https")
            except BaseException as exc:
                exc.add_note(page.describe())
                raise

        # The browser is free to offer HTTP/2: the server offers only HTTP/1.1 over TLS
        # (server._hypercorn_config explains why), so this also checks that ALPN choice.
        with trio.fail_after(60):
            await trio.to_thread.run_sync(run_pages, body, [])
    assert [t["name"] for t in seen["state"]["tiles"]] == ["Secure Sam"]
    assert seen["protocol"] == "http/1.1"
    assert seen["websockets"] and all(u.startswith("wss://") for u in seen["websockets"])


async def test_no_room_available_says_so_and_keeps_trying(tmp_path: Path) -> None:
    require_chromium()
    seen: dict[str, Any] = {}
    async with running_server(make_config(tmp_path, rooms={"idle_pool": 0, "max_rooms": 0})) as srv:

        def body(browser: Any) -> None:
            page = Page(browser, srv.url + "/no-room", "N")
            page.join("Nobody")
            seen["banner"] = poll(
                lambda: "could not start a room" in (b := page.state()["banner"]) and b,
                timeout=10,
                what=f"the failure banner: {page.describe()}",
            )
            seen["visible"] = page.page.get_by_test_id("banner").inner_text()
            seen["state"] = page.state()

        with trio.fail_after(60):
            await trio.to_thread.run_sync(run_pages, body)
    assert "Retrying in" in seen["banner"], seen
    assert seen["visible"] == seen["banner"]
    assert seen["state"]["phase"] == "joining" and not seen["state"]["joined"]


async def test_the_active_speaker_is_shown_large(tmp_path: Path) -> None:
    """An aiortc peer sends a tone into the page's room: the SFU elects it from its RFC 6464
    audio levels and the page shows its tile large (the own tile never is)."""
    require_chromium()
    release = trio.Event()

    async def speaker(
        srv: Any, room_id: int, *, task_status: Any = trio.TASK_STATUS_IGNORED
    ) -> None:
        async with open_media_peer(tone=True) as peer:
            await peer.join(srv.ws_url, room_id, "talker", "Talker")
            task_status.started()
            await release.wait()

    with trio.fail_after(30):
        async with running_server(make_config(tmp_path)) as srv, trio.open_nursery() as nursery:
            token = trio.lowlevel.current_trio_token()

            def body(browser: Any) -> None:
                page = Page(browser, srv.url + "/web-speaker", "S")
                try:
                    page.join("Listener")
                    room_id = page.wait_joined()["roomId"]
                    trio.from_thread.run(nursery.start, speaker, srv, room_id, trio_token=token)
                    tiles = poll(
                        lambda: (
                            (t := {x["id"]: x for x in page.state()["tiles"]})
                            .get("talker", {})
                            .get("activeSpeaker")
                            and t
                        ),
                        timeout=15,
                        what="the talker's tile marked as the active speaker",
                    )
                    assert not tiles[page.id]["activeSpeaker"], tiles
                    big = page.tile("talker").bounding_box()
                    small = page.page.locator('[data-testid="tile"].self').bounding_box()
                    assert big and small, (big, small)
                    area = big["width"] * big["height"], small["width"] * small["height"]
                    assert area[0] > 4 * area[1], (big, small)
                    assert page.page.locator("#grid.has-speaker").count() == 1
                    page.screenshot("web-active-speaker")
                except BaseException as exc:
                    exc.add_note(page.describe())
                    raise
                finally:
                    trio.from_thread.run_sync(release.set, trio_token=token)

            await trio.to_thread.run_sync(run_pages, body)
