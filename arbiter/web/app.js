// Wiring: landing → lobby → call, the join flow with automatic rejoin, controls, and a
// read-only test hook (window.arbiter).

import {
  backoff,
  getConfig,
  iceServersFor,
  JoinError,
  resolveRoom,
  roomPathFromLocation,
  sleep,
} from "./api.js";
import { Call } from "./call.js";
import { suggestRoomName } from "./names.js";
import { captureScreen, ensureAudioContext, LevelMeter, LocalMedia } from "./media.js";
import { Signaling, SignalingError } from "./signaling.js";
import { $, banner, Chat, fillDevices, Grid, hydrateIcons, initials, toast } from "./ui.js";

// Our own tile and level meter are keyed by this Symbol: every string key in the grid and the
// peer maps comes from the server (peer ids), and a peer may pick any id, "self" included.
const SELF = Symbol("self");
const RETRY_CAP_MS = 10000;

const roomPath = roomPathFromLocation();
const media = new LocalMedia();
const grid = new Grid($("#grid"));
const chat = new Chat({
  log: $("#chat-log"),
  form: $("#chat-form"),
  input: $("#chat-input"),
  onSend: (content) => session.signaling?.send("chat", { content }) ?? false,
  onUnread: (n) => {
    $("#unread").hidden = n === 0;
    $("#unread").textContent = n > 9 ? "9+" : String(n);
  },
});

const state = {
  phase: "lobby", // lobby | joining | joined | reconnecting | left | failed
  name: "",
  roomId: null,
  id: null,
  attempts: 0,
  banner: "",
  errors: [],
  peers: new Map(), // remote peer id (string) -> {name, features}
  meters: new Map(), // SELF | remote peer id -> LevelMeter
  screenTrack: null,
  marks: {}, // performance.now() of joinClick, joined, firstRemoteFrame
};
let session = {}; // {signaling, call, generation}
let generation = 0;

// ------------------------------------------------------------------ screens

function show(screen) {
  for (const id of ["landing", "lobby", "call", "left"]) $(`#${id}`).hidden = id !== screen;
}

function setBanner(text, kind = "warn") {
  state.banner = text || "";
  banner(text, kind);
}

function startLanding() {
  show("landing");
  $("#landing-room").value = suggestRoomName();
  $("#landing-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const room = $("#landing-room").value.trim().replace(/^\/+|\/+$/g, "");
    if (room) location.assign(`/${encodeURIComponent(room)}`);
  });
  $("#landing-room").focus();
}

async function startLobby() {
  show("lobby");
  document.title = `${roomPath} · Arbiter`;
  $("#lobby-room").textContent = roomPath;
  const nameInput = $("#name");
  nameInput.value = localStorage.getItem("arbiter.name") || "";
  nameInput.addEventListener("input", () => {
    $("#preview-avatar").textContent = initials(nameInput.value || "?");
  });
  $("#preview-avatar").textContent = initials(nameInput.value || "?");
  $("#join-form").addEventListener("submit", (event) => {
    event.preventDefault();
    join();
  });
  $("#lobby-mic").addEventListener("click", () => setMic(!media.micOn));
  $("#lobby-cam").addEventListener("click", () => setCam(!media.camOn));
  $("#mic-select").addEventListener("change", (e) => reopenDevices({ audio: e.target.value }));
  $("#cam-select").addEventListener("change", (e) => reopenDevices({ video: e.target.value }));
  (nameInput.value ? $("#join") : nameInput).focus();
  state.mediaReady = openDevices();
  getConfig().then((c) => (state.config = c)); // warm: the Join click needs it
}

async function openDevices(change) {
  $("#lobby-status").textContent = "Opening camera and microphone…";
  await (change ? media.chooseDevices(change) : media.open());
  $("#media-error").textContent = media.error;
  $("#lobby-status").textContent = "";
  $("#preview").srcObject = media.cameraTrack ? new MediaStream([media.cameraTrack]) : null;
  const devices = await LocalMedia.devices();
  fillDevices($("#mic-select"), devices.audio, media.audioTrack?.getSettings().deviceId, "Microphone");
  fillDevices($("#cam-select"), devices.video, media.cameraTrack?.getSettings().deviceId, "Camera");
  renderMediaButtons();
}

function reopenDevices(change) {
  state.mediaReady = openDevices(change);
}

function renderMediaButtons() {
  const micOn = media.micOn && media.hasMic;
  const camOn = media.camOn && media.hasCamera;
  for (const [button, on, iconOn, iconOff, hasDevice] of [
    [$("#lobby-mic"), micOn, "mic", "micOff", media.hasMic],
    [$("#mic-toggle"), micOn, "mic", "micOff", media.hasMic],
    [$("#lobby-cam"), camOn, "cam", "camOff", media.hasCamera],
    [$("#cam-toggle"), camOn, "cam", "camOff", media.hasCamera],
  ]) {
    button.setAttribute("aria-pressed", String(on));
    button.disabled = !hasDevice;
    button.classList.toggle("off", !on);
    const slot = button.querySelector("[data-icon]");
    const want = on ? iconOn : iconOff;
    if (slot.dataset.icon !== want) {
      slot.dataset.icon = want;
      hydrateIcons(button);
    }
  }
  $("#mic-toggle .label").textContent = micOn ? "Mute" : "Unmute";
  $("#cam-toggle .label").textContent = camOn ? "Stop video" : "Start video";
  $("#preview-tile").classList.toggle("camera-off", !camOn);
  const sharing = !!state.screenTrack;
  $("#share-toggle").setAttribute("aria-pressed", String(sharing));
  $("#share-toggle").classList.toggle("active", sharing);
  $("#share-toggle .label").textContent = sharing ? "Stop share" : "Share";
  $("#share-toggle").disabled = !navigator.mediaDevices?.getDisplayMedia;
  if (grid.get(SELF)) grid.setFeatures(SELF, features());
}

// ------------------------------------------------------------------ join and rejoin

function features() {
  return {
    audio: media.micOn && media.hasMic,
    video: (media.camOn && media.hasCamera) || !!state.screenTrack,
  };
}

function outgoingVideo() {
  return state.screenTrack || media.videoTrack();
}

async function join() {
  state.marks = { joinClick: performance.now() };
  ensureAudioContext(); // on the click: autoplay policy
  state.name = ($("#name").value.trim() || "Guest").slice(0, 64);
  localStorage.setItem("arbiter.name", state.name);
  $("#join").disabled = true;
  await state.mediaReady;
  $("#preview").srcObject = null;
  show("call");
  $("#room-title").textContent = roomPath;
  document.title = `${roomPath} · Arbiter`;
  grid.add(SELF, { name: state.name, self: true });
  grid.setVideo(SELF, media.cameraTrack, { mirror: true });
  if (media.audioTrack) state.meters.set(SELF, new LevelMeter(media.audioTrack));
  renderMediaButtons();
  startLoops();
  connect("Joining…");
}

/** Run the whole join flow until it succeeds, with back-off; one generation at a time. */
async function connect(message) {
  const mine = ++generation;
  state.phase = state.phase === "joined" || state.phase === "reconnecting" ? "reconnecting" : "joining";
  for (let attempt = 0; ; attempt++) {
    if (mine !== generation) return;
    state.attempts = attempt;
    setBanner(attempt === 0 ? message : `${message} (attempt ${attempt + 1})`, "info");
    try {
      await connectOnce(mine);
      if (mine !== generation) return;
      state.phase = "joined";
      state.marks.joined = performance.now();
      setBanner("");
      updateCount();
      return;
    } catch (err) {
      if (mine !== generation) return;
      teardown();
      const text = err?.message || String(err);
      state.errors.push(text);
      if ((err instanceof JoinError && !err.retryable) || (err instanceof SignalingError && err.status === 403)) {
        state.phase = "failed";
        setBanner(`Cannot join: ${text}`, "error");
        return;
      }
      const wait = backoff(attempt, { cap: RETRY_CAP_MS });
      setBanner(`${text} Retrying in ${Math.ceil(wait / 1000)} s…`, "warn");
      await sleep(wait);
    }
  }
}

async function connectOnce(mine) {
  const config = state.config || (state.config = await getConfig());
  const roomId = await resolveRoom(roomPath, {
    onStatus: (text) => mine === generation && setBanner(text, "info"),
  });
  if (mine !== generation) return;
  const id = crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random().toString(36).slice(2)}`;
  const signaling = new Signaling(config.wsUrl, {
    onMessage: (msg) => mine === generation && onMessage(msg),
    onClose: () => mine === generation && lost("Lost the connection to the server."),
  });
  const call = new Call({
    signaling,
    roomId,
    events: {
      onTrack: (peer, track) => onTrack(peer, track),
      onConsumerState: (peer, s) => onConsumerState(peer, s),
      onProducerState: (s) => s === "failed" && mine === generation && lost("The media connection failed."),
      onError: (text) => state.errors.push(text),
    },
  });
  session = { signaling, call, generation: mine };
  Object.assign(state, { roomId, id });
  const identified = await signaling.identify({ id, roomId, name: state.name });
  if (mine !== generation) return;
  // TURN credentials come with `identified` (only identified clients get them); a server that
  // does not send them there still lists its ICE servers in /config.
  call.setIceServers(iceServersFor(identified, config));
  signaling.send("features", features());
  await call.publish(media.audioTrack, outgoingVideo());
}

function teardown() {
  const { signaling, call } = session;
  session = {};
  call?.close();
  signaling?.leave();
  for (const id of [...state.peers.keys()]) removePeer(id);
}

function lost(reason) {
  if (state.phase !== "joined" && state.phase !== "joining" && state.phase !== "reconnecting") return;
  teardown();
  state.phase = "reconnecting";
  connect(`${reason} Reconnecting…`);
}

function leave(reason = "") {
  generation++;
  teardown();
  state.phase = "left";
  stopShare({ republish: false });
  media.stopDevices();
  for (const meter of state.meters.values()) meter.close();
  state.meters.clear();
  grid.remove(SELF);
  setBanner("");
  $("#left-reason").textContent = reason;
  show("left");
  $("#rejoin").focus();
}

// ------------------------------------------------------------------ signaling frames

function onMessage(msg) {
  switch (msg.type) {
    case "roster":
      for (const c of Array.isArray(msg.clients) ? msg.clients : []) {
        if (c && typeof c === "object") addPeer(c.id, c.name, c.features);
      }
      break;
    case "chatHistory":
      chat.setHistory(msg.messages);
      break;
    case "clientJoin":
      if (addPeer(msg.clientId, msg.name)) toast(`${state.peers.get(msg.clientId).name} joined`);
      break;
    case "clientDisconnect":
      if (isPeerId(msg.clientId) && state.peers.has(msg.clientId)) {
        toast(`${state.peers.get(msg.clientId).name} left`);
        removePeer(msg.clientId);
      }
      break;
    case "sfuDisconnect":
      lost("The media server restarted.");
      break;
    case "chat":
      chat.add(msg);
      break;
    case "features":
      if (isPeerId(msg.id) && state.peers.has(msg.id) && msg.features && typeof msg.features === "object") {
        const peer = state.peers.get(msg.id);
        peer.features = peerFeatures(msg.features);
        grid.setFeatures(msg.id, peer.features);
      }
      break;
    case "producer":
      session.call?.handle(msg).then(() => {
        if (session.call?.producerAnswered && state.banner.startsWith("Waiting")) setBanner("");
      });
      break;
    case "consumer":
      session.call?.handle(msg);
      break;
    case "error":
      state.errors.push(`${msg.action}: ${msg.status} ${msg.message}`);
      if (msg.action === "handshake" && msg.status === 503) retryOffer();
      else if (msg.action === "chat") toast(`Message not sent: ${msg.message}`);
      break;
    default:
      break;
  }
}

/** The room's SFU is (re)starting: offer again with back-off on this connection; rejoin
 * from scratch only if it stays away. */
function retryOffer() {
  const call = session.call;
  if (!call || call.producerAnswered) return;
  const attempt = (call.offerRetries = (call.offerRetries || 0) + 1);
  if (attempt > 6) return lost("The media server is not available.");
  setBanner("Waiting for the media server…", "info");
  setTimeout(() => {
    if (session.call === call && call.sendOffer() === false && !call.producerAnswered) {
      lost("The media server is not available.");
    }
  }, backoff(attempt - 1, { base: 250, cap: 4000 }));
}

/** Peer ids are the server's strings; they are only ever Map keys and attribute values. */
function isPeerId(id) {
  return typeof id === "string" && id !== "";
}

/** {audio, video} booleans from a peer's (untrusted) features: only `false` turns one off. */
function peerFeatures(f) {
  return { audio: f?.audio !== false, video: f?.video !== false };
}

/** Add (or rename) a remote participant; false when `id` is not a remote peer's id. */
function addPeer(id, name, initial) {
  if (!isPeerId(id) || id === state.id) return false;
  const known = state.peers.get(id);
  const peer = known || { name: "", features: peerFeatures(initial) };
  peer.name = (typeof name === "string" && name) || peer.name || "Guest";
  state.peers.set(id, peer);
  grid.add(id, { name: peer.name });
  grid.setFeatures(id, peer.features);
  updateCount();
  return !known;
}

function removePeer(id) {
  session.call?.closeConsumer(id);
  state.meters.get(id)?.close();
  state.meters.delete(id);
  state.peers.delete(id);
  grid.remove(id);
  updateCount();
}

function onTrack(peer, track) {
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

function onConsumerState(peer, s) {
  if (!state.peers.has(peer)) return;
  const text = { connected: "", failed: "connection lost", disconnected: "reconnecting…" }[s];
  grid.setStatus(peer, text ?? "connecting…");
}

function watchFirstFrame(video) {
  if (!video || state.marks.firstRemoteFrame) return;
  const done = () => {
    if (!state.marks.firstRemoteFrame) state.marks.firstRemoteFrame = performance.now();
  };
  if (video.requestVideoFrameCallback) video.requestVideoFrameCallback(done);
  else video.addEventListener("loadeddata", done, { once: true });
}

function updateCount() {
  const n = state.peers.size + 1;
  $("#people-count").textContent = `· ${n} ${n === 1 ? "person" : "people"}`;
}

// ------------------------------------------------------------------ controls

function setMic(on) {
  media.setMic(on);
  renderMediaButtons();
  session.signaling?.send("features", features());
}

function setCam(on) {
  media.setCam(on);
  renderMediaButtons();
  session.signaling?.send("features", features());
}

async function toggleShare() {
  if (state.screenTrack) return stopShare();
  let track;
  try {
    track = await captureScreen();
  } catch (err) {
    toast(err.message);
    return;
  }
  if (!track) return;
  if (state.phase === "left") return track.stop();
  state.screenTrack = track;
  track.addEventListener("ended", () => stopShare()); // "Stop sharing" in the browser's UI
  await session.call?.replaceVideo(track);
  grid.setVideo(SELF, track, { mirror: false });
  renderMediaButtons();
  session.signaling?.send("features", features());
}

async function stopShare({ republish = true } = {}) {
  const track = state.screenTrack;
  if (!track) return;
  state.screenTrack = null;
  track.stop();
  if (!republish) return;
  await session.call?.replaceVideo(media.videoTrack());
  grid.setVideo(SELF, media.cameraTrack, { mirror: true });
  renderMediaButtons();
  session.signaling?.send("features", features());
}

function toggleChat(open = $("#chat").hidden) {
  $("#chat").hidden = !open;
  $("#chat-toggle").setAttribute("aria-pressed", String(open));
  $("#call").classList.toggle("chat-open", open);
  chat.show(open);
  grid.layout();
  if (open) $("#chat-input").focus();
  else $("#chat-toggle").focus();
}

async function copyLink() {
  const link = `${location.origin}/${encodeURIComponent(roomPath).replace(/%2F/g, "/")}`;
  try {
    await navigator.clipboard.writeText(link);
    toast("Link copied");
  } catch {
    const area = Object.assign(document.createElement("textarea"), { value: link });
    document.body.append(area);
    area.select();
    const ok = document.execCommand("copy");
    area.remove();
    toast(ok ? "Link copied" : link);
  }
}

// ------------------------------------------------------------------ loops: stats, speaking

let lastStats = { remote: {} };

function startLoops() {
  if (state.loops) return;
  state.loops = true;
  setInterval(async () => {
    const call = session.call;
    if (!call || state.phase !== "joined") return;
    lastStats = await call.stats();
    for (const [peer, s] of Object.entries(lastStats.remote)) {
      if (!state.peers.has(peer)) continue;
      const detail = `loss ${(s.loss * 100).toFixed(1)} %, jitter ${Math.round(s.jitter * 1000)} ms` +
        (s.rtt != null ? `, rtt ${Math.round(s.rtt * 1000)} ms` : "");
      grid.setQuality(peer, s.quality, detail);
    }
  }, 1000);
  setInterval(() => {
    for (const [id, meter] of state.meters) {
      const muted = id === SELF ? !media.micOn : state.peers.get(id)?.features?.audio === false;
      grid.setSpeaking(id, !muted && meter.sample() > 0.03);
    }
  }, 150);
}

// ------------------------------------------------------------------ test hook (read-only)

window.arbiter = Object.freeze({
  state: () => ({
    phase: state.phase,
    joined: state.phase === "joined",
    id: state.id,
    roomId: state.roomId,
    name: state.name,
    banner: state.banner,
    sharing: !!state.screenTrack,
    tiles: grid.ids().map((key) => {
      const t = grid.get(key);
      return {
        id: t.self ? state.id : t.id, // our own tile is keyed by a Symbol, not by our id
        self: t.self,
        name: t.name,
        muted: !t.muted.hidden,
        cameraOff: !t.camOff.hidden,
        speaking: t.node.classList.contains("speaking"),
        quality: t.quality.dataset.quality || null,
        status: t.status.textContent,
      };
    }),
    chat: chat.messages.map(({ sender, name, content, ts }) => ({ sender, name, content, ts })),
    errors: [...state.errors],
    marks: { ...state.marks },
  }),
  stats: async () => (session.call ? session.call.stats({ track: false }) : { remote: {}, producer: {} }),
});

// ------------------------------------------------------------------ start

hydrateIcons();
$("#mic-toggle").addEventListener("click", () => setMic(!media.micOn));
$("#cam-toggle").addEventListener("click", () => setCam(!media.camOn));
$("#share-toggle").addEventListener("click", () => toggleShare());
$("#chat-toggle").addEventListener("click", () => toggleChat());
$("#chat-close").addEventListener("click", () => toggleChat(false));
$("#copy-link").addEventListener("click", () => copyLink());
$("#leave").addEventListener("click", () => leave());
$("#rejoin").addEventListener("click", () => location.reload());
document.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && !$("#chat").hidden) toggleChat(false);
});
window.addEventListener("pagehide", () => {
  if (state.phase !== "left") teardown();
});

if (roomPath) startLobby();
else startLanding();
