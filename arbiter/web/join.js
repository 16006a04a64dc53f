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
import { $, $as, toast } from "./ui.js";

const RETRY_CAP_MS = 10000;
const KICKED = 4003; // the close code of a socket whose client a moderator removed
// "Service Restart" (IANA WebSocket Close Code Number Registry, RFC 6455 section 11.7): the
// server is going down to come back (SIGTERM), after a `serverRestarting` frame or not.
const SERVICE_RESTART = 1012;
export const RESTARTING = "The server is restarting. Reconnecting…";
// A restart is told calmly for this long; an outage that lasts longer is reported as one.
const RESTART_CALM_MS = 60000;
// After `serverRestarting`, the server closes the socket; if it has not within this, we do.
const RESTART_CLOSE_MS = 5000;
// Rejoining after a restart waits 1-3 s first (random) so that a server just back is not met
// by every client at once.
const RESTART_SPREAD_MS = [1000, 3000];

/**
 * How a call ended, for the card shown after it: a title, and why (or nothing, when the
 * title says it all).
 *
 * @typedef {object} Ending
 * @property {"left" | "removed"} phase
 * @property {string} title
 * @property {string} reason
 */

/** @type {Record<"left" | "closed", Ending>} */
const ENDINGS = {
  left: { phase: "left", title: "You left the call", reason: "" },
  closed: { phase: "left", title: "The room was closed", reason: "The server's operator closed this room." },
};

/** The Join click (the lobby has put the name and password into `state`). */
export async function join() {
  state.marks = { joinClick: performance.now() };
  ensureAudioContext(); // on the click: autoplay policy
  state.removedBy = null;
  state.skipLookup = state.lobbyInfo?.exists === false; // claim at once: the lobby just looked
  $as("#join", HTMLButtonElement).disabled = true;
  await state.mediaReady;
  $as("#preview", HTMLVideoElement).srcObject = null;
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

/** Whether the server said it is restarting (recently enough to keep saying it calmly). */
function restarting() {
  return performance.now() < state.restartUntil;
}

/**
 * Run the whole join flow until it succeeds, with back-off; one generation at a time.
 * `delay`: wait this long before the first attempt.
 *
 * @param {string} message  what the banner says while joining
 * @param {{delay?: number}} [opts]
 */
async function connect(message, { delay = 0 } = {}) {
  const mine = ++session.generation;
  state.phase = state.phase === "joined" || state.phase === "reconnecting" ? "reconnecting" : "joining";
  if (delay > 0) {
    setBanner(message, "info");
    await sleep(delay);
  }
  for (let attempt = 0; ; attempt++) {
    if (mine !== session.generation) return;
    state.attempts = attempt;
    if (restarting()) setBanner(RESTARTING, "info");
    else setBanner(attempt === 0 ? message : `${message} (attempt ${attempt + 1})`, "info");
    try {
      await connectOnce(mine);
      if (mine !== session.generation) return;
      state.phase = "joined";
      state.restartUntil = 0;
      state.marks.joined = performance.now();
      setBanner("");
      updateCount();
      return;
    } catch (err) {
      if (mine !== session.generation) return;
      teardown();
      const { text, detail } = describeFailure(err);
      state.errors.push(detail);
      // The person reads a sentence; what the browser or the server said goes to the console.
      console.warn("Arbiter: joining failed:", detail);
      const refusal = err instanceof SignalingError && refusalFor(err);
      if (refusal) return backToLobby(refusal);
      if (err instanceof JoinError && !err.retryable) return backToLobby({ message: text });
      const wait = backoff(attempt, { cap: RETRY_CAP_MS });
      if (restarting()) setBanner(RESTARTING, "info");
      else setBanner(`${text} Retrying in ${Math.ceil(wait / 1000)} s…`, "warn");
      await sleep(wait);
    }
  }
}

/**
 * A failed join attempt as a plain sentence for the banner (`text`) and what actually went
 * wrong for the console and the test hook (`detail`).
 *
 * @param {unknown} err
 * @returns {{text: string, detail: string}}
 */
export function describeFailure(err) {
  if (err instanceof JoinError) return { text: err.message, detail: err.detail || err.message };
  if (err instanceof SignalingError) {
    const detail = err.detail || err.message; // a refusal: the server's words
    if (!err.status) return { text: err.message, detail };
    if (err.status === 404) return { text: "The room is no longer there.", detail };
    if (err.status === 429) return { text: "The server is busy.", detail };
    if (err.status >= 500) return { text: "The server ran into a problem.", detail };
    return { text: "The server did not let us in.", detail };
  }
  const e = /** @type {{name?: string, message?: string} | null} */ (err);
  const detail = `${e?.name || "Error"}: ${e?.message || String(err)}`;
  return { text: "Could not set up the call's audio and video.", detail };
}

/** @param {number} mine  the join generation this attempt belongs to */
async function connectOnce(mine) {
  const config = state.config || (state.config = await getConfig());
  const lookup = !state.skipLookup;
  state.skipLookup = false;
  const room = await resolveRoom(roomPath, {
    onStatus: (text) => mine === session.generation && !restarting() && setBanner(text, "info"),
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
      onProducerState: (s) => {
        if (s === "failed" && mine === session.generation) lost("The media connection failed.");
      },
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
  call.setIceServers(iceServersFor(/** @type {{iceServers?: unknown}} */ (identified), config));
  signaling.send("features", features());
  await call.publish(media.audioTrack, outgoingVideo());
}

/**
 * What the lobby says about a refused identify, or null for one worth retrying (404: the room
 * went away between the lookup and the socket; the flow claims a fresh one).
 *
 * @param {SignalingError} err
 * @returns {Refusal | null}
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

/**
 * @typedef {{message: string, mode?: import("./context.js").LobbyState["mode"]}} Refusal
 */

/**
 * A refused join: back to the lobby (devices kept), which says why; nothing is retried.
 *
 * @param {Refusal} refusal
 */
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

/** @param {{code: number, reason: string}} info  the closed socket's */
function closed({ code }) {
  if (code === KICKED || state.removedBy !== null) {
    const by = state.removedBy ?? "a moderator";
    end({ phase: "removed", title: "You were removed from the call", reason: `You were removed from the call by ${by}.` });
    return;
  }
  if (code === SERVICE_RESTART || restarting()) {
    restart();
    return;
  }
  lost("Lost the connection to the server.");
}

function inCall() {
  return state.phase === "joined" || state.phase === "joining" || state.phase === "reconnecting";
}

/** @param {string} reason  a sentence saying what broke */
function lost(reason) {
  if (!inCall()) return;
  if (restarting()) return restart(); // the restart's own close is on its way or done
  teardown();
  state.phase = "reconnecting";
  connect(`${reason} Reconnecting…`);
}

/** `serverRestarting`: say so calmly, and rejoin once the server has closed the socket. */
function serverRestarting() {
  if (!inCall()) return;
  state.restartUntil = performance.now() + RESTART_CALM_MS;
  setBanner(RESTARTING, "info");
  const { signaling } = session;
  setTimeout(() => {
    if (signaling && session.signaling === signaling && restarting()) restart();
  }, RESTART_CLOSE_MS);
}

/** The server is going away to come back: rejoin after a short random wait, calmly. */
function restart() {
  if (!inCall()) return;
  if (!restarting()) state.restartUntil = performance.now() + RESTART_CALM_MS;
  teardown();
  state.phase = "reconnecting";
  const [low, high] = RESTART_SPREAD_MS;
  connect(RESTARTING, { delay: low + Math.random() * (high - low) });
}

/** The Leave button: the call ends here, and the card says nothing more than its title. */
export function leave() {
  end(ENDINGS.left);
}

/**
 * End the call and show the card after it: its title, and the reason when there is one to
 * tell (the paragraph is hidden otherwise).
 *
 * @param {Ending} ending
 */
function end({ phase, title, reason }) {
  session.generation++;
  teardown();
  state.phase = phase;
  state.moderator = false;
  state.restartUntil = 0;
  stopShare({ republish: false });
  media.stopDevices();
  stopLocal();
  $("#left-title").textContent = title;
  $("#left-reason").textContent = reason;
  $("#left-reason").hidden = !reason;
  show("left");
  $("#rejoin").focus();
}

// ------------------------------------------------------------------ signaling frames

/** @param {import("./signaling.js").ServerFrame} msg */
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
        toast(`${peerName(msg.clientId, "Someone")} joined`);
      }
      break;
    case "clientDisconnect":
      if (isPeerId(msg.clientId) && state.peers.has(msg.clientId)) {
        toast(`${peerName(msg.clientId, "Someone")} left`);
        removePeer(msg.clientId);
      }
      break;
    case "sfuDisconnect":
      lost("The media server restarted.");
      break;
    case "serverRestarting":
      // SIGTERM (docs/PROTOCOL.md section 3): a close 1012 follows; rejoin when it is back.
      serverRestarting();
      break;
    case "roomClosed":
      // An operator closed the room: the call is over; rejoining would open a new room.
      end(ENDINGS.closed);
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
      onKicked(msg, peerName(msg.by, "a moderator")); // "...removed from the call by a moderator"
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
      else if (msg.action === "chat") toast(msg.status === 429 ? "Message not sent: you are sending too fast." : "Message not sent.");
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

/**
 * The page comes back from the back/forward cache after `pageHidden` closed its connections:
 * a call that was on rejoins.
 *
 * @param {PageTransitionEvent} event
 */
export function pageShown(event) {
  if (event.persisted && inCall()) {
    state.phase = "reconnecting";
    connect("Reconnecting…");
  }
}
