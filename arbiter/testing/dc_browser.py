"""Chromium pages with the deployed client's data channels, for tests and scripts (issue 11).

`chat_scenario` runs in a worker thread (`trio.to_thread.run_sync`): it opens one page per
participant with tests/browser_participant.js (which publishes camera and microphone and opens
the deployed client's negotiated channels "chat" 100 and "features" 110 on its producer pc, and
counts negotiationneeded instead of re-offering), waits for both channels to open, then has
the pages chat both ways (the second page re-offers on its producer pc in between, as the
deployed client does on negotiationneeded) and turn the first page's camera off on channel 110. `web_chat`, when
given, is called (on the trio side, through `trio.from_thread.run`) once the channels are open:
the test's web-client user chats then. Returns every page's `arbiterState()`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import trio

from .browser import chromium, poll

HARNESS = Path(__file__).resolve().parents[2] / "tests" / "browser_participant.js"
TIMEOUT = 10.0


class _FirefoxPage:
    """A Firefox page with the Playwright page's `evaluate` (promises awaited)."""

    def __init__(self, page: Any) -> None:
        self.page = page

    def evaluate(self, expression: str) -> Any:
        return self.page.evaluate_async(expression)


def chat_scenario(srv_url: str, ws_url: str, room_id: int, peers: list[str], *,
                  web_chat: Callable[[], Awaitable[None]] | None = None,
                  first: str = "chromium") -> dict[str, Any]:  # fmt: skip
    """`first="firefox"`: the first peer is a Firefox page (the server must announce a
    non-loopback address), the others Chromium pages."""
    harness = HARNESS.read_text()
    states: dict[str, Any] = {}
    with ExitStack() as stack:
        browser = stack.enter_context(chromium())
        pages: dict[str, Any] = {}
        try:
            for index, peer_id in enumerate(peers):
                if index == 0 and first == "firefox":
                    from .firefox import firefox

                    ff = stack.enter_context(firefox()).new_page(srv_url + "/", peer_id)
                    ff.client.execute_script(harness, sandbox=None)
                    page: Any = _FirefoxPage(ff)
                else:
                    page = browser.new_context(bypass_csp=True).new_page()
                    page.goto(srv_url + "/")
                    page.add_script_tag(content=harness)
                pages[peer_id] = page
                args = json.dumps([ws_url, room_id, peer_id, f"name-{peer_id}"])
                page.evaluate(f"window.arbiterJoin(...{args})")

            def state(peer_id: str) -> dict[str, Any]:
                return pages[peer_id].evaluate("window.arbiterState()")  # type: ignore[no-any-return]

            def received(peer_id: str, label: str) -> list[dict[str, Any]]:
                return [json.loads(d) for lbl, d in state(peer_id)["channelMessages"]
                        if lbl == label]  # fmt: skip

            for peer_id in peers:
                poll(lambda p=peer_id: state(p)["channelStates"] == {"chat": "open",
                                                                      "features": "open"},
                     timeout=TIMEOUT, what=f"{peer_id}'s channels open")  # fmt: skip
            first, second = peers[0], peers[1]
            pages[first].evaluate("window.channelSend('chat', JSON.stringify("
                                  "{id: 'someone else', content: 'hello from the first page'}))")
            poll(lambda: any(m.get("content") == "hello from the first page"
                             for m in received(second, "chat")),
                 timeout=TIMEOUT, what="chat from the first page")  # fmt: skip
            # A re-offer (the deployed client sends one on every negotiationneeded) renegotiates
            # the same connection: the SCTP association and its channels carry on.
            pages[second].evaluate("window.reoffer()")
            poll(lambda: state(second)["producerAnswers"] == 2, timeout=TIMEOUT,
                 what="the answer to the re-offer")  # fmt: skip
            pages[second].evaluate("window.channelSend('chat', JSON.stringify("
                                   "{content: 'and back from the second'}))")
            poll(lambda: any(m.get("content") == "and back from the second"
                             for m in received(first, "chat")),
                 timeout=TIMEOUT, what="chat from the second page")  # fmt: skip
            pages[first].evaluate("window.channelSend('features', JSON.stringify("
                                  "{features: {audio: true, video: false}}))")
            poll(lambda: {"id": first, "features": {"audio": True, "video": False}}
                 in received(second, "features"),
                 timeout=TIMEOUT, what="features from the first page")  # fmt: skip
            if web_chat is not None:
                trio.from_thread.run(web_chat)
                poll(lambda: all(any(m.get("sender") == "Web user" for m in received(p, "chat"))
                                 for p in peers),
                     timeout=TIMEOUT, what="web chat on channel 100")  # fmt: skip
            time.sleep(0.3)  # anything extra (a duplicate, a re-offer) would show up by now
        finally:
            for peer_id, page in pages.items():
                try:
                    states[peer_id] = page.evaluate("window.arbiterState()")
                    page.evaluate("window.arbiterLeave()")
                except Exception as exc:  # noqa: BLE001 - report what can be reported
                    states.setdefault(peer_id, {"errors": [f"harness unreachable: {exc}"]})
    return states
