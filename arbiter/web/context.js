// What the client's modules share: the room, local media, the grid and chat, the state the test
// hook reads, and the current join's signaling and call. Nothing here starts anything.

import { roomPathFromLocation } from "./api.js";
import { LocalMedia } from "./media.js";
import { TilePreferences } from "./preferences.js";
import { $, $as, banner, Chat, Grid, toast } from "./ui.js";

// Our own tile and level meter are keyed by this Symbol: every string key in the grid and the
// peer maps comes from the server (peer ids), and a peer may pick any id, "self" included.
export const SELF = Symbol("self");

export const roomPath = roomPathFromLocation();
export const media = new LocalMedia();
export const grid = new Grid($("#grid"));

/** @typedef {"lobby" | "joining" | "joined" | "reconnecting" | "left" | "removed"} Phase */

/**
 * A remote participant as the roster, clientJoin and features frames describe it.
 *
 * @typedef {object} PeerInfo
 * @property {string} name
 * @property {import("./ui.js").Features} features
 * @property {boolean} moderator
 */

/**
 * What the lobby says: its mode and the message shown under the form.
 *
 * @typedef {object} LobbyState
 * @property {"join" | "create" | "password" | "moderator"} mode
 * @property {string} message
 */

/**
 * @typedef {object} State
 * @property {Phase} phase
 * @property {string} name
 * @property {number | null} roomId
 * @property {string | null} id  our peer id in the current join
 * @property {number} attempts
 * @property {string} banner
 * @property {string[]} errors
 * @property {string[]} notices
 * @property {Map<string, PeerInfo>} peers
 * @property {Map<string | symbol, import("./media.js").LevelMeter>} meters
 * @property {MediaStreamTrack | null} screenTrack
 * @property {{joinClick?: number, joined?: number, firstRemoteFrame?: number}} marks
 * @property {LobbyState} lobby
 * @property {string} password
 * @property {string} moderatorKey
 * @property {boolean} moderator
 * @property {boolean} locked
 * @property {boolean | null} passwordRequired
 * @property {string | null} removedBy
 * @property {number} restartUntil
 * @property {import("./api.js").ClientConfig} [config]  GET /config's, once fetched
 * @property {import("./api.js").RoomInfo | null} [lobbyInfo]  the lobby's lookup
 * @property {boolean} [skipLookup]  the next join claims at once (the lobby just looked)
 * @property {boolean} [creating]  the lobby offered to create the room
 * @property {Promise<void>} [mediaReady]  camera and microphone opened (or given up)
 * @property {boolean} [loops]  the stats and speaking loops run
 */

/** @type {State} */
export const state = {
  phase: "lobby",
  name: "",
  roomId: null,
  id: null,
  attempts: 0,
  banner: "",
  errors: [],
  notices: [], // what the person was told about moderation (muted by, removed by, lock)
  peers: new Map(), // remote peer id (string) -> {name, features, moderator}
  meters: new Map(), // SELF | remote peer id -> LevelMeter
  screenTrack: null,
  marks: {}, // performance.now() of joinClick, joined, firstRemoteFrame
  // Room access (docs/PROTOCOL.md: passwords, moderators, lock).
  lobby: { mode: "join", message: "" }, // join | create | password | moderator
  password: "", // what this page presents on identify (and offers claimRoom when creating)
  moderatorKey: "", // the key presented on identify, "" when none
  moderator: false,
  locked: false,
  passwordRequired: null, // true | false once known (lobby, creation, roomState)
  removedBy: null, // the name of whoever removed us, once `kicked` arrives
  restartUntil: 0, // performance.now() until which a server restart is told calmly
};

/**
 * The current join: its Signaling, Call and generation (a rejoin replaces all three).
 *
 * @type {{signaling: import("./signaling.js").Signaling | null, call: import("./call.js").Call | null, generation: number}}
 */
export const session = { signaling: null, call: null, generation: 0 };

/**
 * Send on the current join's socket; false when there is none (or it is not open).
 *
 * @param {string} action
 * @param {object} [data]
 * @returns {boolean}
 */
export function send(action, data) {
  return session.signaling?.send(action, data) ?? false;
}

/** Per remote tile: the `preferences` (height drawn, paused) the SFU picks a layer by. */
export const preferences = new TilePreferences({ send: (data) => send("preferences", data) });

export const chat = new Chat({
  log: $("#chat-log"),
  form: $("#chat-form"),
  input: $as("#chat-input", HTMLInputElement),
  onSend: (/** @type {string} */ content) => send("chat", { content }),
  onUnread: (/** @type {number} */ n) => {
    $("#unread").hidden = n === 0;
    $("#unread").textContent = n > 9 ? "9+" : String(n);
  },
});

/** @param {"landing" | "lobby" | "call" | "left"} screen  the one shown; the others hide */
export function show(screen) {
  for (const id of ["landing", "lobby", "call", "left"]) $(`#${id}`).hidden = id !== screen;
}

/**
 * @param {string} text  "" hides the banner
 * @param {"info" | "warn" | "error"} [kind]
 */
export function setBanner(text, kind = "warn") {
  state.banner = text || "";
  banner(text, kind);
}

/**
 * A toast that the test hook also keeps (moderation notices).
 *
 * @param {string} text
 */
export function notify(text) {
  state.notices.push(text);
  toast(text);
}

/**
 * The link to this room (path only: whoever opens it still needs any password).
 *
 * @param {string} [fragment]  e.g. `#mod=<key>`
 */
export function roomLink(fragment = "") {
  return `${location.origin}/${encodeURIComponent(roomPath).replace(/%2F/g, "/")}${fragment}`;
}
