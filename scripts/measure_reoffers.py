"""Count producer offers from a page that re-offers on every `negotiationneeded` (issue 11).

Browsers re-offer whenever negotiation is needed; the deployed client re-offers on every
`negotiationneeded` and opens the negotiated data channels "chat" (id 100) and "features"
(id 110). This script starts `arbiter serve` as a child process on loopback, opens two headless
Chromium pages in one room and, for `--seconds` (30):

- page A publishes camera + microphone (plus the two data channels unless `--no-channels`) and
  answers every `negotiationneeded` with a new producer offer;
  With `--loop`, A also re-offers (the same offer again) as soon as each answer is in: the
  negotiationneeded loop a browser falls into when its data channels are refused, as fast as
  the signaling round trip allows;
- page B publishes once and answers consumer offers: `--subscriber reuse` applies a consumer
  offer for a publisher it already has a connection to on that same RTCPeerConnection (JSEP
  renegotiation), `rebuild` closes it and answers on a new one (what the older clients did).

Prints JSON: A's producer offers and answers, B's consumer offers received and consumer
connections created, B's `framesDecoded` from A at the start and end of the window, and the
server's `arbiter_media_transports{kind="transports"}` and STUN/RTP counters from /metrics.

The page code is self-contained (not tests/browser_participant.js), so the same script measures
an older tree (e.g. a `git worktree`): run it from that tree's directory with it on PYTHONPATH,
`cd OLD && PYTHONPATH=OLD /work/main/.venv/bin/python /work/main/scripts/measure_reoffers.py`
(`python -m arbiter.cli serve`, the child, imports from its working directory first).

Usage: .venv/bin/python scripts/measure_reoffers.py [--seconds 30] [--subscriber reuse|rebuild]
       [--no-channels] [--loop] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import sync_playwright

from arbiter.bench.procstat import spawn_serve

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]

PAGE_JS = """
(() => {
  const s = (window.m = {
    offers: 0, answers: 0, consumerOffers: 0, consumerPcs: 0, errors: [], pcs: new Map(),
  });
  let ws, pc, roomId;
  const send = (action, data) => ws.send(JSON.stringify({ action, data }));
  async function offer() {
    await pc.setLocalDescription(await pc.createOffer());
    s.offers++;
    send("handshake", { type: "producer", roomId, description: pc.localDescription.toJSON() });
  }
  async function consumer(publisher, description, mode) {
    s.consumerOffers++;
    let c = s.pcs.get(publisher);
    if (c && mode === "rebuild") { c.close(); c = null; }
    if (!c || c.signalingState === "closed") {
      c = new RTCPeerConnection();
      s.consumerPcs++;
      s.pcs.set(publisher, c);
    }
    await c.setRemoteDescription(description);
    await c.setLocalDescription(await c.createAnswer());
    send("handshake", {
      type: "consumer", remotePeerId: publisher, roomId,
      description: c.localDescription.toJSON(),
    });
  }
  let loop = false;
  window.stopLoop = () => { loop = false; };
  window.start = (url, room, id, opts) => new Promise((resolve, reject) => {
    const { reoffer, channels, mode } = opts;
    loop = !!opts.loop;
    roomId = room;
    ws = new WebSocket(url);
    let queue = Promise.resolve();
    ws.onopen = () => send("identify", { type: "client", id, roomId, name: id });
    ws.onmessage = (event) => {
      const msg = JSON.parse(event.data);
      queue = queue.then(async () => {
        if (msg.type === "identified") {
          const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: { width: 320, height: 240 } });
          pc = new RTCPeerConnection();
          for (const t of stream.getTracks()) pc.addTrack(t, stream);
          if (channels) {
            pc.createDataChannel("chat", { negotiated: true, id: 100 });
            pc.createDataChannel("features", { negotiated: true, id: 110 });
          }
          if (reoffer) pc.onnegotiationneeded = () => offer().catch((e) => s.errors.push(String(e)));
          else await offer();
          resolve();
        } else if (msg.type === "error" || msg.error) {
          s.errors.push(JSON.stringify(msg));
        } else if (msg.type === "producer" && msg.description) {
          if (pc.signalingState === "have-local-offer") {
            await pc.setRemoteDescription(msg.description);
            s.answers++;
            if (loop) offer().catch((e) => s.errors.push(String(e)));
          }
        } else if (msg.type === "consumer" && msg.description && msg.description.type === "offer") {
          await consumer(msg.remotePeerId, msg.description, mode);
        }
      }).catch((e) => s.errors.push(String(e)));
    };
    ws.onerror = () => reject(new Error("ws error"));
  });
  window.decoded = async (publisher) => {
    const c = s.pcs.get(publisher);
    let frames = 0;
    if (c) (await c.getStats()).forEach((r) => {
      if (r.type === "inbound-rtp" && r.kind === "video") frames += r.framesDecoded || 0;
    });
    return frames;
  };
  window.summary = () => ({
    offers: s.offers, answers: s.answers, consumerOffers: s.consumerOffers,
    consumerPcs: s.consumerPcs, errors: s.errors.slice(0, 5), errorCount: s.errors.length,
  });
})();
"""


def start_server(tmp: Path) -> tuple[subprocess.Popen[str], str]:
    config = tmp / "arbiter.toml"
    config.write_text(
        '[http]\nhost = "127.0.0.1"\nport = 0\n'
        '[media]\nlisten = "127.0.0.1"\nport = 0\nannounced_ip = ["127.0.0.1"]\n'
        f'[store]\npath = "{tmp / "reoffers.db"}"\n[rooms]\nidle_pool = 0\n[workers]\nlocal = 0\n'
    )
    return spawn_serve(config)


def metrics(base: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in httpx.get(base + "/metrics").text.splitlines():
        if line.startswith('arbiter_media_transports{kind="transports"}'):
            out["transports"] = float(line.rsplit(" ", 1)[1])
        for reason in ("stun_unknown_ufrag", "rtp_in", "sdp_rejected"):
            if line.startswith("arbiter_media_datagrams_total{") and f'"{reason}"' in line:
                out[reason] = float(line.rsplit(" ", 1)[1])
    return out


def measure(base: str, seconds: float, channels: bool, mode: str, loop: bool) -> dict[str, Any]:
    room = httpx.put(base + "/createRoom").json()["roomId"]
    httpx.patch(base + "/claimRoom", json={"urlPath": "reoffers"}).raise_for_status()
    ws_url = base.replace("http://", "ws://") + "/ws"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            pages = {}
            for peer, reoffer in (("A", True), ("B", False)):
                options = {"reoffer": reoffer, "channels": channels, "mode": mode,
                           "loop": loop and reoffer}  # fmt: skip
                page = browser.new_context(bypass_csp=True).new_page()
                page.goto(base + "/")
                page.add_script_tag(content=PAGE_JS)
                page.evaluate(
                    "([u, r, i, o]) => window.start(u, r, i, o)",
                    [ws_url, room, peer, options],
                )
                pages[peer] = page
            start = time.monotonic()
            pages["B"].wait_for_timeout(3000)
            frames_start = pages["B"].evaluate("window.decoded('A')")
            pages["B"].wait_for_timeout(max(0.0, seconds - (time.monotonic() - start)) * 1000)
            frames_end = pages["B"].evaluate("window.decoded('A')")
            pages["A"].evaluate("window.stopLoop()")
            pages["B"].wait_for_timeout(1000)
            frames_later = pages["B"].evaluate("window.decoded('A')")
            return {
                "seconds": seconds,
                "data_channels": channels,
                "subscriber": mode,
                "loop": loop,
                "A": pages["A"].evaluate("window.summary()"),
                "B": pages["B"].evaluate("window.summary()"),
                "B_frames_decoded_from_A": [frames_start, frames_end, frames_later],
                "still_decoding": frames_later > frames_end,
                "server": metrics(base),
            }
        finally:
            browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--subscriber", choices=("reuse", "rebuild"), default="reuse")
    parser.add_argument("--no-channels", action="store_true")
    parser.add_argument("--loop", action="store_true", help="re-offer after every answer")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        proc, base = start_server(Path(tmp))
        try:
            result = measure(base, args.seconds, not args.no_channels, args.subscriber, args.loop)
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
