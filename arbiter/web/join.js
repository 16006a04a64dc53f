// The call wiring: join, the join flow with automatic rejoin and back-off, refusals (back to
// the lobby saying why, never a rejoin loop), being removed, leaving, and the signaling frames.

import { backoff, getConfig, iceServersFor, JoinError, resolveRoom, sleep } from "./api.js";
import { Call } from "./call.js";
import { chat, grid, media, roomPath, SELF, session, setBanner, show, state } from "./context.js";
import { features, outgoingVideo, renderMediaButtons, stopShare } from "./controls.js";
import { reopenLobby } from "./lobby.js";
import { ensureAudioContext, LevelMeter } from "./media.js";
import {
  keyRefused,
  onIdentified,
  onKicked,
  onModerateError,
  onMuteRequest,
  onRoomState,
  renderRoomState,
  storedKey,
  storeKey,
} from "./moderation.js";
import {
  addPeer,
  isPeerId,
  onConsumerState,
  onTrack,
  peerName,
  removePeer,
  setPeerFeatures,
  startLoops,
  updateCount,
} from "./peers.js";
import { Signaling, SignalingError } from "./signaling.js";
import { $, toast } from "./ui.js";

const RETRY_CAP_MS = 10000;
const KICKED = 4003; // the close code of a socket whose client a moderator removed

/** The Join click (the lobby has put the name and password into `state`). */
export async function join() {
  state.marks = { joinClick: performance.now() };
  ensureAudioContext(); // on the click: autoplay policy
  state.removedBy = null;
  state.skipLookup = state.lobbyInfo?.exists === false; // claim at once: the lobby just looked
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
  renderRoomState();
  startLoops();
  connect("Joining…");
}

/** Run the whole join flow until it succeeds, with back-off; one generation at a time. */
async function connect(message) {
  const mine = ++session.generation;
  state.phase = state.phase === "joined" || state.phase === "reconnecting" ? "reconnecting" : "joining";
  for (let attempt = 0; ; attempt++) {
    if (mine !== session.generation) return;
    state.attempts = attempt;
    setBanner(attempt === 0 ? message : `${message} (attempt ${attempt + 1})`, "info");
    try {
      await connectOnce(mine);
      if (mine !== session.generation) return;
      state.phase = "joined";
      state.marks.joined = performance.now();
      setBanner("");
      updateCount();
      return;
    } catch (err) {
      if (mine !== session.generation) return;
      teardown();
      const text = err?.message || String(err);
      state.errors.push(text);
      const refusal = err instanceof SignalingError && refusalFor(err);
      if (refusal) return backToLobby(refusal);
      if (err instanceof JoinError && !err.retryable) {
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
  const lookup = !state.skipLookup;
  state.skipLookup = false;
  const room = await resolveRoom(roomPath, {
    onStatus: (text) => mine === session.generation && setBanner(text, "info"),
    password: state.password, // protects the room only if this join creates it
    lookup,
  });
  if (mine !== session.generation) return;
  if (room.moderatorKey) storeKey(room.moderatorKey); // we created the room: we moderate it
  state.moderatorKey = room.moderatorKey || storedKey();
  const { roomId } = room;
  const id = crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random().toString(36).slice(2)}`;
  const signaling = new Signaling(config.wsUrl, {
    onMessage: (msg) => mine === session.generation && onMessage(msg),
    onClose: (info) => mine === session.generation && closed(info),
  });
  const call = new Call({
    signaling,
    roomId,
    events: {
      onTrack: (peer, track) => onTrack(peer, track),
      onConsumerState: (peer, s) => onConsumerState(peer, s),
      onProducerState: (s) => s === "failed" && mine === session.generation && lost("The media connection failed."),
      onError: (text) => state.errors.push(text),
    },
  });
  Object.assign(session, { signaling, call });
  Object.assign(state, { roomId, id });
  const identified = await signaling.identify({
    id,
    roomId,
    name: state.name,
    // A matching key admits us without the password; without a key, the password we know.
    moderatorKey: state.moderatorKey,
    password: state.moderatorKey ? "" : state.password,
  });
  if (mine !== session.generation) return;
  onIdentified(identified);
  // TURN credentials come with `identified` (only identified clients get them); a server that
  // does not send them there still lists its ICE servers in /config.
  call.setIceServers(iceServersFor(identified, config));
  session.signaling.send("features", features());
  await call.publish(media.audioTrack, outgoingVideo());
}

/**
 * What the lobby says about a refused identify, or null for one worth retrying (404: the room
 * went away between the lookup and the socket; the flow claims a fresh one).
 */
function refusalFor(err) {
  const { status, message } = err;
  const hadKey = !!state.moderatorKey;
  const refusedKey = () => {
    if (hadKey) keyRefused(); // a matching key is never refused these: this one is stale
  };
  if (status === 401) {
    refusedKey();
    return { mode: "password", message: "This room is protected by a password. Type it to join." };
  }
  if (status === 403 && /password/i.test(message)) {
    refusedKey();
    return { mode: "password", message: "Wrong password. Check it and try again." };
  }
  if (status === 403 && /locked/i.test(message)) {
    refusedKey();
    return {
      mode: state.lobby.mode === "moderator" ? "join" : undefined,
      message: "This room is locked: nobody can join until a moderator unlocks it. Try again later.",
    };
  }
  if (status === 403 && /full/i.test(message)) {
    return { message: "This room is full. Try again when someone leaves." };
  }
  if (status === 403) return { message: `Cannot join: ${message}` };
  if (status === 429) {
    return { message: "Too many refused attempts from your network. Wait a minute, then try again." };
  }
  return null;
}

function stopLocal() {
  for (const meter of state.meters.values()) meter.close();
  state.meters.clear();
  grid.remove(SELF);
  setBanner("");
}

/** A refused join: back to the lobby (devices kept), which says why; nothing is retried. */
function backToLobby(refusal) {
  session.generation++;
  teardown();
  stopShare({ republish: false });
  stopLocal();
  reopenLobby(refusal);
}

function teardown() {
  const { signaling, call } = session;
  Object.assign(session, { signaling: null, call: null });
  call?.close();
  signaling?.leave();
  for (const id of [...state.peers.keys()]) removePeer(id);
}

function closed({ code }) {
  if (code === KICKED || state.removedBy !== null) {
    const by = state.removedBy ?? "a moderator";
    leave(`You were removed from the call by ${by}.`, { removed: true });
    return;
  }
  lost("Lost the connection to the server.");
}

function lost(reason) {
  if (state.phase !== "joined" && state.phase !== "joining" && state.phase !== "reconnecting") return;
  teardown();
  state.phase = "reconnecting";
  connect(`${reason} Reconnecting…`);
}

export function leave(reason = "", { removed = false, title = "" } = {}) {
  session.generation++;
  teardown();
  state.phase = removed ? "removed" : "left";
  state.moderator = false;
  stopShare({ republish: false });
  media.stopDevices();
  stopLocal();
  $("#left-title").textContent =
    title || (removed ? "You were removed from the call" : "You left the call");
  $("#left-reason").textContent = reason;
  show("left");
  $("#rejoin").focus();
}

// ------------------------------------------------------------------ signaling frames

function onMessage(msg) {
  switch (msg.type) {
    case "roster":
      for (const c of Array.isArray(msg.clients) ? msg.clients : []) {
        if (c && typeof c === "object") addPeer(c.id, c.name, { features: c.features, moderator: c.moderator });
      }
      break;
    case "chatHistory":
      chat.setHistory(msg.messages);
      break;
    case "clientJoin":
      if (addPeer(msg.clientId, msg.name, { moderator: msg.moderator })) {
        toast(`${state.peers.get(msg.clientId).name} joined`);
      }
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
    case "roomClosed":
      // An operator closed the room: the call is over; rejoining would open a new room.
      leave("The server's operator closed this room.", { title: "The room was closed" });
      break;
    case "chat":
      chat.add(msg);
      break;
    case "activeSpeaker":
      // The SFU's dominant speaker, shown large; when it is us, the last remote one stays.
      if (isPeerId(msg.id) && msg.id !== state.id) grid.setActiveSpeaker(msg.id);
      break;
    case "features":
      setPeerFeatures(msg.id, msg.features);
      break;
    case "roomState":
      onRoomState(msg);
      break;
    case "muteRequest":
      onMuteRequest(msg, peerName(msg.by));
      break;
    case "kicked":
      onKicked(msg, peerName(msg.by));
      break;
    case "producer":
      session.call?.handle(msg).then(() => {
        if (session.call?.producerAnswered && state.banner.startsWith("Waiting")) setBanner("");
      });
      break;
    case "consumer":
      session.call?.handle(msg);
      break;
    case "layers":
      // The simulcast encodings somebody watches (DESIGN section 4, "Quality").
      session.call?.setLayers(msg);
      break;
    case "error":
      // A server without simulcast refuses `preferences` (400 "Unknown action"): nothing
      // the person can act on, and nothing lost.
      if (msg.action === "preferences") break;
      state.errors.push(`${msg.action}: ${msg.status} ${msg.message}`);
      if (msg.action === "handshake" && msg.status === 503) retryOffer();
      else if (msg.action === "chat") toast(`Message not sent: ${msg.message}`);
      else if (msg.action === "moderate") onModerateError(msg);
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

/** Everything on the page goes when it does. */
export function pageHidden() {
  if (state.phase !== "left" && state.phase !== "removed") teardown();
}
