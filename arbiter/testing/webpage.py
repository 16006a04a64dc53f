"""Driving the served web client (arbiter/web) in headless Chromium, for tests.

`Page` opens `http://host/<room>` in its own browser context, joins through the lobby's DOM and
reads the page only through the DOM and the read-only hook `window.arbiter`; `run_pages` runs a
body with a fresh Chromium in the calling (worker) thread; `wait_decoding` / `wait_settled`
poll until pages decode each other. Plus the instruments the security tests share.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from .browser import ARTIFACTS, chromium, poll

CAMERA = (640, 360)  # what the client asks the (fake) camera for
JOIN_TIMEOUT = 15.0
MEDIA_TIMEOUT = 25.0
LEAVE_DEADLINE = 2.0

# A name that would run script if it ever reached innerHTML.
HOSTILE_NAME = '<img src=x onerror="window.pwned=1">'

INJECTED_MARKUP = """() => document.querySelectorAll(
  '#grid img, #chat-log img, #chat-log b, #toast img, #toast b').length
  + (window.pwned === undefined ? 0 : 100)"""


# Collects securitypolicyviolation events from the first script on.
CSP_LISTENER = """(() => {
  const seen = [];
  document.addEventListener("securitypolicyviolation", (e) => seen.push({
    directive: e.violatedDirective, blocked: e.blockedURI, source: e.sourceFile,
    line: e.lineNumber, sample: e.sample,
  }));
  Object.defineProperty(window, "cspViolations", { value: () => seen.slice() });
})();"""


class Page:
    """One participant's page: actions through the DOM, reads through DOM or window.arbiter."""

    def __init__(
        self,
        browser: Any,
        url: str,
        label: str,
        setup: Callable[[Any], None] | None = None,
        **context: Any,
    ) -> None:
        self.label = label
        self.context = browser.new_context(**{"viewport": {"width": 960, "height": 600}, **context})
        self.context.set_default_timeout(10_000)
        if setup is not None:  # init scripts and routes, before the page loads
            setup(self.context)
        self.page = self.context.new_page()
        self.log: list[str] = []
        self.page.on("console", lambda m: self.log.append(f"{m.type}: {m.text}"))
        self.page.on("pageerror", lambda e: self.log.append(f"pageerror: {e}"))
        self.page.on(
            "requestfailed",
            lambda r: self.log.append(f"requestfailed: {r.method} {r.url} {r.failure}"),
        )
        self.websockets: list[str] = []
        self.page.on("websocket", lambda ws: self.websockets.append(ws.url))
        self.page.goto(url)

    def join(self, name: str) -> None:
        self.page.get_by_label("Your name").fill(name)
        self.page.get_by_role("button", name="Join call").click()

    def state(self) -> dict[str, Any]:
        return self.page.evaluate("window.arbiter.state()")

    def stats(self) -> dict[str, Any]:
        # Publisher ids travel as [key, value] pairs: Playwright would drop a "__proto__" key.
        stats = self.page.evaluate(
            "window.arbiter.stats().then((s) => ({ ...s, remote: Object.entries(s.remote) }))"
        )
        stats["remote"] = dict(stats["remote"])
        return stats

    @property
    def id(self) -> str:
        return self.state()["id"]

    def wait_joined(self, timeout: float = JOIN_TIMEOUT) -> dict[str, Any]:
        return poll(
            lambda: (s := self.state())["joined"] and s,
            timeout=timeout,
            what=f"{self.label} to join ({self.log[-5:]})",
        )

    def remote_tile_ids(self) -> set[str]:
        return {t["id"] for t in self.state()["tiles"] if not t["self"]}

    def decoding(self, publishers: set[str]) -> dict[str, Any] | None:
        remote = self.stats()["remote"]
        for p in publishers:
            r = remote.get(p)
            if not r or r["framesDecoded"] <= 0 or r["packetsReceived"] <= 0:
                return None
        return remote

    def tile(self, peer_id: str) -> Any:
        return self.page.locator(f'[data-testid="tile"][data-peer-id="{peer_id}"]')

    def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.page.screenshot(path=str(path))
        return path

    def describe(self) -> str:
        try:
            state = self.state()
        except Exception as exc:  # a crashed page
            state = f"unreachable: {exc}"
        return f"{self.label}: state={state} console={self.log[-15:]}"


def run_pages(body: Callable[[Any], None], extra_args: list[str] | None = None) -> None:
    """`body(browser)` in this (worker) thread with a fresh Chromium that is always closed."""
    with chromium(extra_args) as browser:
        body(browser)


def wait_decoding(pages: dict[str, Page], ids: dict[str, str], timeout: float) -> None:
    for label, page in pages.items():
        others = {ids[o] for o in pages if o != label}
        poll(
            lambda page=page, others=others: page.decoding(others),
            timeout=timeout,
            what=f"{label} decoding {others}: {page.describe()}",
        )


def wait_settled(pages: dict[str, Page], timeout: float) -> dict[str, Page]:
    """Every page joined and decoding every other page under its *current* id."""

    def settled() -> bool:
        states = {label: page.state() for label, page in pages.items()}
        if not all(s["joined"] for s in states.values()):
            return False
        ids = {label: s["id"] for label, s in states.items()}
        return all(
            page.decoding({ids[o] for o in pages if o != label}) is not None
            for label, page in pages.items()
        )

    poll(
        settled,
        timeout=timeout,
        interval=0.2,
        what="every page decoding the others: "
        + " | ".join(page.describe() for page in pages.values()),
    )
    return pages


def record_sent_frames(page: Page) -> list[dict[str, Any]]:
    """Every JSON object `page` sends on a WebSocket opened from now on, parsed, in order.

    Call it before `join` (the page opens its WebSocket on the Join click). The list fills as
    Playwright delivers events, i.e. during later calls on the page."""
    import json

    frames: list[dict[str, Any]] = []

    def sent(payload: str | bytes) -> None:
        if isinstance(payload, str):
            try:
                frame = json.loads(payload)
            except ValueError:
                return
            if isinstance(frame, dict):
                frames.append(frame)

    page.page.on("websocket", lambda ws: ws.on("framesent", sent))
    return frames


# ------------------------------------------------------------ per-publisher inbound counters

# Every inbound-rtp stream of the page's RTCPeerConnections (recorded by
# thin_link.track_peer_connections' tracker), keyed by the remote peer whose tile plays its
# track (video element or audio element) and by kind. Counters of two streams for one peer and
# kind (a connection rebuilt while the old one closes) add up.
INBOUND_BY_PEER_JS = """async () => {
  const peerOfTrack = {};
  for (const tile of document.querySelectorAll('[data-testid="tile"][data-peer-id]')) {
    const peer = tile.getAttribute("data-peer-id");
    for (const el of tile.querySelectorAll("video, audio")) {
      for (const track of el.srcObject?.getTracks?.() ?? []) peerOfTrack[track.id] = peer;
    }
  }
  const out = {};
  for (const pc of window.__arbiterPcs || []) {
    if (pc.connectionState === "closed") continue;
    let report;
    try { report = await pc.getStats(); } catch { continue; }
    report.forEach((s) => {
      if (s.type !== "inbound-rtp" || (s.kind !== "audio" && s.kind !== "video")) return;
      const peer = peerOfTrack[s.trackIdentifier] ?? `track:${s.trackIdentifier}`;
      const kinds = (out[peer] ??= {});
      const c = (kinds[s.kind] ??= {
        packetsReceived: 0, framesDecoded: 0, bytesReceived: 0, audioLevel: 0,
      });
      c.audioLevel = Math.max(c.audioLevel, s.audioLevel || 0);
      c.packetsReceived += s.packetsReceived || 0;
      c.framesDecoded += s.framesDecoded || 0;
      c.bytesReceived += s.bytesReceived || 0;
    });
  }
  return Object.entries(out);
}"""

InboundCounters = dict[str, dict[str, dict[str, float]]]  # peer -> kind -> counter -> value


def inbound_by_peer(page: Page) -> InboundCounters:
    """`page`'s inbound RTP per remote peer and kind ("audio", "video"): packetsReceived,
    framesDecoded, bytesReceived and (audio) audioLevel, 0..1, the latest. The page needs the
    RTCPeerConnection tracker (`thin_link.track_peer_connections` as its setup hook); a peer
    with no stream is absent."""
    # [key, value] pairs: Playwright would drop a peer id "__proto__" as an object key.
    return {str(peer): kinds for peer, kinds in page.page.evaluate(INBOUND_BY_PEER_JS)}


def inbound_count(counters: InboundCounters, peer: str, kind: str, key: str) -> float:
    """One counter of `inbound_by_peer`'s result, 0 when the stream is not there (yet)."""
    return counters.get(peer, {}).get(kind, {}).get(key, 0)


def run_browsers(body: Callable[[list[Any]], None], *extra_args: list[str]) -> None:
    """`body(browsers)` in this (worker) thread with one fresh Chromium per `extra_args` list
    (browser-wide flags such as `--use-file-for-fake-audio-capture` need their own browser),
    all from one Playwright and all closed whatever happened."""
    from contextlib import ExitStack

    from playwright.sync_api import sync_playwright

    from .browser import CHROMIUM, CHROMIUM_ARGS

    with sync_playwright() as playwright, ExitStack() as stack:
        launched: list[Any] = []
        for args in extra_args:
            browser = playwright.chromium.launch(
                executable_path=str(CHROMIUM), args=CHROMIUM_ARGS + args
            )
            stack.callback(browser.close)
            launched.append(browser)
        body(launched)


# ------------------------------------------------------------ banners, console, tile boxes

# Every text and kind the banner (#banner) shows, in order, from the page's first script on
# (a MutationObserver; "" when it is hidden).
BANNER_RECORDER = """(() => {
  const seen = [];
  Object.defineProperty(window, "bannerHistory", { value: () => seen.slice() });
  document.addEventListener("DOMContentLoaded", () => {
    const node = document.querySelector("#banner");
    const note = () => {
      const shown = !node.hidden;
      const entry = { text: shown ? node.textContent : "", kind: shown ? node.dataset.kind || "" : "" };
      const last = seen[seen.length - 1];
      if (!last || last.text !== entry.text || last.kind !== entry.kind) seen.push(entry);
    };
    new MutationObserver(note).observe(node, {
      attributes: true, childList: true, characterData: true, subtree: true,
    });
  });
})();"""


def record_banners(context: Any) -> None:
    """A `Page` setup hook: the page keeps every banner it shows (`banner_history`)."""
    context.add_init_script(BANNER_RECORDER)


def banner_history(page: Page) -> list[dict[str, str]]:
    """[{"text", "kind"}] of every banner change since the page loaded (`record_banners`)."""
    return page.page.evaluate("window.bannerHistory()")


def console_problems(page: Page) -> list[str]:
    """The page's console errors and uncaught exceptions so far."""
    return [line for line in page.log if line.startswith(("error:", "pageerror:"))]


TILE_BOXES_JS = """() => {
  const grid = document.querySelector('#grid'), s = getComputedStyle(grid);
  const g = grid.getBoundingClientRect();
  const inner = {
    x: g.left + parseFloat(s.paddingLeft), y: g.top + parseFloat(s.paddingTop),
    width: grid.clientWidth - parseFloat(s.paddingLeft) - parseFloat(s.paddingRight),
    height: grid.clientHeight - parseFloat(s.paddingTop) - parseFloat(s.paddingBottom),
  };
  const tiles = [...grid.querySelectorAll('[data-testid=tile]')].map((t) => {
    const r = t.getBoundingClientRect();
    return { self: t.dataset.self !== undefined, large: t.classList.contains('large'),
             x: r.left, y: r.top, width: r.width, height: r.height };
  });
  return { grid: inner, gap: parseFloat(s.columnGap), scrolls: grid.scrollHeight > grid.clientHeight,
           tiles };
}"""


def tile_boxes(page: Page) -> dict[str, Any]:
    """The grid's content box ({x, y, width, height}, CSS pixels), its gap, whether it scrolls,
    and every tile's box with `self` and `large`, in DOM order."""
    return page.page.evaluate(TILE_BOXES_JS)
