// The other participants: their tiles, tracks, features and moderator flags; the stats and
// speaking loops.

import { LevelMeter } from "./media.js";
import { grid, media, preferences, session, state } from "./context.js";
import { renderTileActions } from "./moderation.js";
import { $ } from "./ui.js";

/**
 * Peer ids are the server's strings; they are only ever Map keys and attribute values.
 *
 * @param {unknown} id
 * @returns {id is string}
 */
export function isPeerId(id) {
  return typeof id === "string" && id !== "";
}

/**
 * {audio, video} booleans from a peer's (untrusted) features: only `false` turns one off.
 *
 * @param {any} f
 * @returns {import("./ui.js").Features}
 */
export function peerFeatures(f) {
  return { audio: f?.audio !== false, video: f?.video !== false };
}

/**
 * A remote participant's name, or `fallback` for an id we do not know.
 *
 * @param {unknown} id
 * @param {string} [fallback]
 */
export function peerName(id, fallback = "A moderator") {
  return (isPeerId(id) && state.peers.get(id)?.name) || fallback;
}

/**
 * Add (or rename) a remote participant; false when `id` is not a remote peer's id.
 * `moderator` (from the roster or clientJoin) is kept unless given.
 *
 * @param {unknown} id
 * @param {unknown} name
 * @param {{features?: unknown, moderator?: unknown}} [opts]
 * @returns {boolean}
 */
export function addPeer(id, name, { features, moderator } = {}) {
  if (!isPeerId(id) || id === state.id) return false;
  const known = state.peers.get(id);
  const peer = known || { name: "", features: peerFeatures(features), moderator: false };
  peer.name = (typeof name === "string" && name) || peer.name || "Guest";
  if (moderator !== undefined) peer.moderator = moderator === true;
  state.peers.set(id, peer);
  const tile = grid.add(id, { name: peer.name });
  grid.setFeatures(id, peer.features);
  grid.setModerator(id, peer.moderator);
  preferences.watch(id, tile); // after its features: a tile whose video is off starts paused
  renderTileActions(id);
  updateCount();
  return !known;
}

/** @param {string} id */
export function removePeer(id) {
  preferences.unwatch(id);
  session.call?.closeConsumer(id);
  state.meters.get(id)?.close();
  state.meters.delete(id);
  state.peers.delete(id);
  grid.remove(id);
  updateCount();
}

/**
 * @param {unknown} id
 * @param {unknown} features  a features frame's (untrusted)
 */
export function setPeerFeatures(id, features) {
  if (!isPeerId(id) || !features || typeof features !== "object") return;
  const peer = state.peers.get(id);
  if (!peer) return;
  peer.features = peerFeatures(features);
  grid.setFeatures(id, peer.features);
  preferences.update(id); // video off: paused; back on: resumed
}

/**
 * @param {string} peer
 * @param {MediaStreamTrack} track
 */
export function onTrack(peer, track) {
  if (!state.peers.has(peer) && !addPeer(peer, "Guest")) return;
  if (track.kind === "video") {
    grid.setVideo(peer, track);
    watchFirstFrame(grid.get(peer)?.video);
  } else {
    grid.setAudio(peer, track);
    state.meters.get(peer)?.close();
    state.meters.set(peer, new LevelMeter(track));
  }
}

/**
 * @param {string} peer
 * @param {RTCPeerConnectionState} s
 */
export function onConsumerState(peer, s) {
  if (!state.peers.has(peer)) return;
  /** @type {Partial<Record<RTCPeerConnectionState, string>>} */
  const texts = { connected: "", failed: "connection lost", disconnected: "reconnecting…" };
  const text = texts[s];
  grid.setStatus(peer, text ?? "connecting…");
}

/** @param {HTMLVideoElement | undefined} video */
function watchFirstFrame(video) {
  if (!video || state.marks.firstRemoteFrame) return;
  const done = () => {
    if (!state.marks.firstRemoteFrame) state.marks.firstRemoteFrame = performance.now();
  };
  if (video.requestVideoFrameCallback) video.requestVideoFrameCallback(done);
  else video.addEventListener("loadeddata", done, { once: true });
}

export function updateCount() {
  const n = state.peers.size + 1;
  $("#people-count").textContent = `· ${n} ${n === 1 ? "person" : "people"}`;
}

/** Once a second: per-peer connection quality; every 150 ms: who is speaking. */
export function startLoops() {
  if (state.loops) return;
  state.loops = true;
  setInterval(async () => {
    const call = session.call;
    if (!call || state.phase !== "joined") return;
    const stats = await call.stats();
    for (const [peer, s] of Object.entries(stats.remote)) {
      if (!state.peers.has(peer)) continue;
      const detail = `loss ${((s.loss ?? 0) * 100).toFixed(1)} %, jitter ${Math.round(s.jitter * 1000)} ms` +
        (s.rtt != null ? `, rtt ${Math.round(s.rtt * 1000)} ms` : "");
      grid.setQuality(peer, s.quality ?? "good", detail);
    }
  }, 1000);
  setInterval(() => {
    for (const [id, meter] of state.meters) {
      const muted = typeof id === "symbol" /* SELF */ ? !media.micOn : state.peers.get(id)?.features?.audio === false;
      grid.setSpeaking(id, !muted && meter.sample() > 0.03);
    }
  }, 150);
}
