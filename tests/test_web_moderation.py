"""Room access in the served web client (issue 10), in headless Chromium, through the DOM.

- A page opening a new URL creates the room with a password and is its moderator (it keeps the
  room's moderator key); a second page is asked for the password, is told a wrong one is wrong
  and gets in with the right one; a third joins. The moderator mutes one (their microphone goes
  off and they are told by whom), locks the room (everyone sees it), removes another (told by
  whom, no rejoin), and a fourth page is refused with the lock message, once.
- The moderator link (`#mod=<key>`, copied from the call) makes a phone-sized page a moderator
  past the password; the fragment leaves the address bar; the password dialog sets and removes
  the password, and the lobby of the next page follows.

Screenshots for the README: lobby-password.png (a wrong password in the lobby) and
moderator-controls.png (a moderator's view of a locked room) go to test-artifacts/, and to docs/
with ARBITER_DOCS_SCREENSHOTS=1 (so that a plain test run leaves the tree clean):

    ARBITER_DOCS_SCREENSHOTS=1 .venv/bin/python -m pytest tests/test_web_moderation.py

Every wait is bounded.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from arbiter.testing import make_config, running_server
from arbiter.testing.browser import ARTIFACTS, no_leaked_threads, poll, require_chromium
from arbiter.testing.webpage import CSP_LISTENER, HOSTILE_NAME, INJECTED_MARKUP, Page, run_pages

pytestmark = [pytest.mark.browser, pytest.mark.media]

DOCS = Path(__file__).resolve().parents[1] / "docs"
SHOTS = DOCS if os.environ.get("ARBITER_DOCS_SCREENSHOTS") else ARTIFACTS
PASSWORD = "correct horse"
# Markup a name could have injected into what moderation adds (dialogs, tile buttons).
MODERATION_MARKUP = "() => document.querySelectorAll('dialog img, .tile-actions img').length"
NO_LOOP_WAIT = 3.0  # seconds a refused page is watched for not trying again


@pytest.fixture(autouse=True)
def _threads() -> Iterator[None]:
    with no_leaked_threads():
        yield


def csp(context: Any) -> None:
    """Page setup: record Content-Security-Policy violations (the dialogs and tile buttons
    must need nothing the served policy forbids)."""
    context.add_init_script(CSP_LISTENER)


def no_violations(pages: dict[str, Page]) -> None:
    for page in pages.values():
        assert page.page.evaluate("cspViolations()") == [], page.label


def lobby(page: Page, what: str, check: Any) -> dict[str, Any]:
    return poll(
        lambda: (s := page.state())["phase"] == "lobby" and check(s["lobby"]) and s,
        timeout=10,
        what=f"{page.label}'s lobby {what}: {page.describe()}",
    )


def join_with_password(page: Page, name: str, password: str) -> None:
    page.page.get_by_label("Your name").fill(name)
    page.page.get_by_test_id("password-input").fill(password)
    page.page.get_by_role("button", name="Join call").click()


def tile_button(page: Page, peer_id: str, name: str) -> Any:
    return page.tile(peer_id).get_by_role("button", name=name, exact=True)


def stays_refused(page: Page, sockets: int) -> None:
    """No rejoin loop: the page opens no further WebSocket and stays where it is."""
    phase = page.state()["phase"]
    time.sleep(NO_LOOP_WAIT)
    assert len(page.websockets) == sockets, page.websockets
    assert page.state()["phase"] == phase


async def test_password_mute_lock_remove_and_a_locked_out_page(tmp_path: Path) -> None:
    require_chromium()
    seen: dict[str, Any] = {}
    async with running_server(make_config(tmp_path)) as srv:
        url = srv.url + "/mod-room"

        def scenario(browser: Any, pages: dict[str, Page]) -> None:
            # A opens a new URL: the lobby says the room will be created, password optional.
            a = pages["A"] = Page(browser, url, "A", csp)
            lobby(a, "offering to create the room", lambda lb: lb["mode"] == "create")
            note = a.page.get_by_test_id("lobby-note").inner_text()
            assert "creates it" in note and "moderator" in note, note
            a.page.get_by_label("Password (optional)").fill(PASSWORD)
            a.join("Ana")
            ids = {"A": a.wait_joined()["id"]}
            state = a.state()
            assert state["moderator"] and state["hasModeratorKey"], state
            key = a.page.evaluate("localStorage.getItem('arbiter.moderatorKey.mod-room')")
            assert isinstance(key, str) and len(key) >= 32, key
            a.page.get_by_test_id("moderator-controls").wait_for(state="visible")

            # B: the lobby asks for the password; a wrong one is refused and B may retry.
            b = pages["B"] = Page(browser, url, "B", csp)
            lobby(b, "asking for the password", lambda lb: lb["mode"] == "password")
            join_with_password(b, "Bruno", "not it")
            lobby(b, "saying the password is wrong", lambda lb: "Wrong password" in lb["message"])
            assert "Wrong password" in b.page.get_by_test_id("join-error").inner_text()
            assert b.page.get_by_test_id("password-input").evaluate(
                "(e) => e === document.activeElement"
            )
            SHOTS.mkdir(exist_ok=True)
            b.page.screenshot(path=str(SHOTS / "lobby-password.png"))
            join_with_password(b, "Bruno", PASSWORD)
            ids["B"] = b.wait_joined()["id"]

            c = pages["C"] = Page(browser, url, "C", csp)
            lobby(c, "asking for the password", lambda lb: lb["mode"] == "password")
            join_with_password(c, "Carla", PASSWORD)
            ids["C"] = c.wait_joined()["id"]

            # The moderator has Mute and Remove on B's and C's tiles; B and C see A's badge
            # and have no moderation buttons at all.
            for peer, name in (("B", "Bruno"), ("C", "Carla")):
                for action in ("Mute", "Remove"):
                    tile_button(a, ids[peer], f"{action} {name}").wait_for(state="visible")
            for label in ("B", "C"):
                page = pages[label]
                page.tile(ids["A"]).get_by_test_id("badge-moderator").wait_for(state="visible")
                assert page.page.get_by_test_id("tile-actions").locator("button").count() == 0
                assert page.page.get_by_test_id("moderator-controls").is_hidden()
            assert a.page.locator(
                '[data-testid="tile"].self [data-testid="badge-moderator"]'
            ).is_visible()

            # Mute: B's microphone goes off, B is told who did it, A sees B muted.
            tile_button(a, ids["B"], "Mute Bruno").click()
            poll(
                lambda: (
                    b.page.get_by_test_id("toggle-mic").get_attribute("aria-pressed") == "false"
                ),
                timeout=5,
                what="B's microphone off",
            )
            poll(
                lambda: "Ana muted your microphone" in b.state()["notices"],
                timeout=5,
                what=f"B told who muted it: {b.describe()}",
            )
            a.tile(ids["B"]).get_by_test_id("badge-muted").wait_for(state="visible", timeout=5_000)

            # Lock: everyone sees the indicator; the button now offers to unlock.
            a.page.get_by_role("button", name="Lock room", exact=True).click()
            for label in ("A", "B", "C"):
                pages[label].page.get_by_test_id("lock-indicator").wait_for(
                    state="visible", timeout=5_000
                )
            a.page.get_by_role("button", name="Unlock room", exact=True).wait_for(state="visible")
            a.page.locator("#toast").wait_for(state="hidden", timeout=5_000)
            a.page.screenshot(path=str(SHOTS / "moderator-controls.png"))

            # Remove C (confirmed with the keyboard): C is told by whom and does not rejoin;
            # A and B see C go.
            tile_button(a, ids["C"], "Remove Carla").click()
            dialog = a.page.get_by_test_id("confirm-dialog")
            dialog.wait_for(state="visible")
            assert "Remove Carla from the call?" in dialog.inner_text()
            dialog.get_by_role("button", name="Remove", exact=True).focus()
            a.page.keyboard.press("Enter")
            poll(
                lambda: c.state()["phase"] == "removed",
                timeout=5,
                what=f"C removed: {c.describe()}",
            )
            c.page.get_by_role("heading", name="You were removed from the call").wait_for()
            reason = c.page.locator("#left-reason").inner_text()
            assert reason == "You were removed from the call by Ana.", reason
            for label in ("A", "B"):
                poll(
                    lambda label=label: ids["C"] not in pages[label].remote_tile_ids(),
                    timeout=5,
                    what=f"C gone from {label}",
                )
            stays_refused(c, 1)

            # D: the room is locked, the right password is not enough: it says so, once.
            d = pages["D"] = Page(browser, url, "D", csp)
            lobby(d, "asking for the password", lambda lb: lb["mode"] == "password")
            join_with_password(d, "Dora", PASSWORD)
            lobby(d, "saying the room is locked", lambda lb: "locked" in lb["message"])
            assert "locked" in d.page.get_by_test_id("join-error").inner_text()
            stays_refused(d, 1)
            seen["states"] = {label: page.state() for label, page in pages.items()}
            no_violations(pages)

        def body(browser: Any) -> None:
            pages: dict[str, Page] = {}
            try:
                scenario(browser, pages)
            except BaseException as exc:
                for page in pages.values():
                    exc.add_note(page.describe())
                    page.screenshot(f"web-moderation-{page.label}-failed")
                raise

        with trio.fail_after(60):
            await trio.to_thread.run_sync(run_pages, body)
    states = seen["states"]
    assert states["B"]["locked"] and not states["B"]["moderator"]
    assert states["B"]["errors"][:1] == ["Wrong password"], states["B"]["errors"]
    assert states["D"]["errors"] == ["Room is locked"], states["D"]["errors"]
    assert states["C"]["removedBy"] == "Ana"


async def test_moderator_link_on_a_phone_and_the_password_dialog(tmp_path: Path) -> None:
    require_chromium()
    seen: dict[str, Any] = {}
    async with running_server(make_config(tmp_path)) as srv:
        url = srv.url + "/link-room"

        def scenario(browser: Any, pages: dict[str, Page]) -> None:
            a = pages["A"] = Page(browser, url, "A", csp)
            a.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=srv.url)
            lobby(a, "offering to create the room", lambda lb: lb["mode"] == "create")
            a.join("Ana")  # no password: an open room
            ids = {"A": a.wait_joined()["id"]}

            # The password dialog, by keyboard: set one.
            a.page.get_by_role("button", name="Room password", exact=True).focus()
            a.page.keyboard.press("Enter")
            a.page.get_by_test_id("password-dialog").wait_for(state="visible")
            assert a.page.evaluate("document.activeElement.id") == "new-password"
            a.page.keyboard.type("second secret")
            a.page.keyboard.press("Enter")
            poll(lambda: a.state()["passwordRequired"] is True, timeout=5, what="roomState")

            # The moderator link, from the clipboard.
            a.page.get_by_role("button", name="Copy moderator link", exact=True).click()
            link = poll(
                lambda: a.page.evaluate("navigator.clipboard.readText()"),
                timeout=5,
                what="the moderator link in the clipboard",
            )
            key = a.page.evaluate("localStorage.getItem('arbiter.moderatorKey.link-room')")
            assert link == f"{url}#mod={key}", link

            # B opens it on a phone: the key is stored, the fragment is gone, no password is
            # asked and B joins as a moderator.
            b = pages["B"] = Page(
                browser,
                link,
                "B",
                csp,
                viewport={"width": 360, "height": 740},
                is_mobile=True,
                has_touch=True,
            )
            assert b.page.url == url, b.page.url
            assert b.page.evaluate("localStorage.getItem('arbiter.moderatorKey.link-room')") == key
            lobby(b, "recognising a moderator", lambda lb: lb["mode"] == "moderator")
            b.join("Bea")
            ids["B"] = b.wait_joined()["id"]
            assert b.state()["moderator"]
            # Moderators cannot mute or remove each other: no buttons either way.
            a.tile(ids["B"]).get_by_test_id("badge-moderator").wait_for(state="visible")
            b.tile(ids["A"]).get_by_test_id("badge-moderator").wait_for(state="visible")
            assert a.page.get_by_test_id("tile-actions").locator("button").count() == 0
            assert b.page.get_by_test_id("tile-actions").locator("button").count() == 0
            b.page.get_by_role("button", name="Lock room", exact=True).wait_for(state="visible")
            width = b.page.evaluate("document.documentElement.scrollWidth")
            assert width <= 360, f"horizontal overflow at 360 px: {width}px"

            # C (a name that would be markup anywhere but textContent) is asked for the new
            # password and gets in with it; B, a moderator on a phone, has Mute and Remove on
            # C's tile, labelled with the name as text; Escape cancels the removal.
            c = pages["C"] = Page(browser, url, "C", csp)
            lobby(c, "asking for the password", lambda lb: lb["mode"] == "password")
            join_with_password(c, HOSTILE_NAME, "second secret")
            ids["C"] = c.wait_joined()["id"]
            for action in ("Mute", "Remove"):
                tile_button(b, ids["C"], f"{action} {HOSTILE_NAME}").wait_for(state="visible")
            b.screenshot("web-moderation-phone")
            tile_button(b, ids["C"], f"Remove {HOSTILE_NAME}").click()
            dialog = b.page.get_by_test_id("confirm-dialog")
            dialog.wait_for(state="visible")
            assert f"Remove {HOSTILE_NAME} from the call?" in dialog.inner_text()
            b.page.keyboard.press("Escape")
            dialog.wait_for(state="hidden")
            assert b.page.evaluate("document.activeElement.textContent") == f"Remove {HOSTILE_NAME}"
            for page in (a, b):
                assert page.page.evaluate(INJECTED_MARKUP) == 0
                assert page.page.evaluate(MODERATION_MARKUP) == 0
            assert ids["C"] in a.remote_tile_ids()

            # Removing the password: the next page's lobby no longer asks for one.
            a.page.get_by_role("button", name="Room password", exact=True).click()
            a.page.get_by_role("button", name="Remove password").click()
            poll(lambda: a.state()["passwordRequired"] is False, timeout=5, what="roomState")
            d = pages["D"] = Page(browser, url, "D", csp)
            lobby(d, "offering a plain join", lambda lb: lb["mode"] == "join")
            d.join("Dan")
            d.wait_joined()
            seen["notices"] = a.state()["notices"]
            no_violations(pages)

        def body(browser: Any) -> None:
            pages: dict[str, Page] = {}
            try:
                scenario(browser, pages)
            except BaseException as exc:
                for page in pages.values():
                    exc.add_note(page.describe())
                    page.screenshot(f"web-moderation-link-{page.label}-failed")
                raise

        with trio.fail_after(60):
            await trio.to_thread.run_sync(run_pages, body)
    assert "The room password is removed" in seen["notices"], seen


async def test_an_operator_closing_the_room_ends_the_call_without_a_rejoin(tmp_path: Path) -> None:
    """`arbiter rooms close` (POST /admin/rooms/<id>/close) sends roomClosed, not
    sfuDisconnect: the page says the room was closed and does not rejoin (which would open a
    new room at the same URL)."""
    require_chromium()
    seen: dict[str, Any] = {}
    async with running_server(make_config(tmp_path)) as srv:

        def body(browser: Any) -> None:
            import httpx

            page = Page(browser, srv.url + "/closing-time", "A")
            page.join("Ana")
            page.wait_joined()
            room = page.state()["roomId"]
            r = httpx.post(f"{srv.url}/admin/rooms/{room}/close", timeout=10)
            seen["close"] = (r.status_code, r.json())
            poll(
                lambda: page.state()["phase"] == "left",
                timeout=10,
                what=f"the page to end the call: {page.describe()}",
            )
            seen["title"] = page.page.locator("#left-title").inner_text()
            time.sleep(NO_LOOP_WAIT)
            r = httpx.get(f"{srv.url}/getRoomId", params={"urlPath": "closing-time"}, timeout=10)
            seen["after"] = r.status_code
            seen["room"] = room

        with trio.fail_after(60):
            await trio.to_thread.run_sync(run_pages, body)
    assert seen["close"] == (200, {"roomId": seen["room"], "status": "closed"})
    assert seen["title"] == "The room was closed"
    assert seen["after"] == 404  # nobody rejoined: no new room at that URL
