// Before the call: the landing page (pick a room) and the lobby (name, preview, devices, and
// what it takes to get in: a new room offers an optional password, a protected one asks for
// it, and a refused join comes back here saying why).

import { getConfig, roomInfo } from "./api.js";
import { media, roomPath, show, state } from "./context.js";
import { renderMediaButtons, setCam, setMic } from "./controls.js";
import { LocalMedia } from "./media.js";
import { storedKey } from "./moderation.js";
import { suggestRoomName } from "./names.js";
import { $, $as, fillDevices, initials } from "./ui.js";

/**
 * @typedef {object} LobbyMode
 * @property {string} note  shown above the form ("" for none)
 * @property {boolean} field  the password field is shown
 * @property {string} [label]
 * @property {string} [hint]
 * @property {AutoFill} [autocomplete]
 */

/** @type {Record<import("./context.js").LobbyState["mode"], LobbyMode>} */
const MODES = {
  join: { note: "", field: false },
  create: {
    note: "Nobody has opened this room yet: joining creates it, and you will be its moderator.",
    field: true,
    label: "Password (optional)",
    hint: "Whoever joins will need it. Leave it empty for an open room.",
    autocomplete: "new-password",
  },
  password: {
    note: "This room is protected by a password.",
    field: true,
    label: "Room password",
    hint: "",
    autocomplete: "off",
  },
  moderator: { note: "You are this room's moderator.", field: false },
};

// The landing page's suggested name, handed to the lobby it opens: 65 random bits nobody has
// used, so the lobby knows the room is new without asking (a lookup of a name that has no room
// is a 404, which the browser reports in the console as an error).
const FRESH_KEY = "arbiter.freshRoom";

export function startLanding() {
  show("landing");
  const suggested = suggestRoomName();
  $as("#landing-room", HTMLInputElement).value = suggested;
  $("#landing-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const room = $as("#landing-room", HTMLInputElement).value.trim().replace(/^\/+|\/+$/g, "");
    if (!room) return;
    try {
      if (room === suggested) sessionStorage.setItem(FRESH_KEY, room);
    } catch {
      // storage refused: the lobby asks the server
    }
    location.assign(`/${encodeURIComponent(room)}`);
  });
  $as("#landing-room", HTMLInputElement).focus();
}

/**
 * The lobby, once per page; `onJoin()` runs the join once the form is valid.
 *
 * @param {() => void} onJoin
 */
export function startLobby(onJoin) {
  show("lobby");
  document.title = `${roomPath} · Arbiter`;
  $("#lobby-room").textContent = roomPath;
  const nameInput = $as("#name", HTMLInputElement);
  nameInput.value = localStorage.getItem("arbiter.name") || "";
  nameInput.addEventListener("input", () => {
    $("#preview-avatar").textContent = initials(nameInput.value || "?");
  });
  $("#preview-avatar").textContent = initials(nameInput.value || "?");
  $("#join-form").addEventListener("submit", (event) => {
    event.preventDefault();
    if (takeLobbyForm()) onJoin();
  });
  $as("#password", HTMLInputElement).addEventListener("input", () => setLobbyMessage(""));
  $("#lobby-mic").addEventListener("click", () => setMic(!media.micOn));
  $("#lobby-cam").addEventListener("click", () => setCam(!media.camOn));
  const mic = $as("#mic-select", HTMLSelectElement);
  const cam = $as("#cam-select", HTMLSelectElement);
  mic.addEventListener("change", () => reopenDevices({ audio: mic.value }));
  cam.addEventListener("change", () => reopenDevices({ video: cam.value }));
  (nameInput.value ? $as("#join", HTMLButtonElement) : nameInput).focus();
  setLobbyMode(storedKey() ? "moderator" : "join");
  state.mediaReady = openDevices();
  getConfig().then((c) => (state.config = c)); // warm: the Join click needs it
  /** @type {Promise<import("./api.js").RoomInfo | null>} */
  const looked = takeFresh() ? Promise.resolve({ exists: false }) : roomInfo(roomPath);
  looked.then((info) => {
    state.lobbyInfo = info;
    if (info) {
      state.passwordRequired = info.exists ? info.passwordRequired : null;
      if (state.phase === "lobby" && !state.lobby.message) setLobbyMode(lobbyModeFor(info));
    }
  });
}

/** Whether this page is the room the landing page just made up (once: a reload asks). */
function takeFresh() {
  try {
    const fresh = sessionStorage.getItem(FRESH_KEY) === roomPath;
    sessionStorage.removeItem(FRESH_KEY);
    return fresh;
  } catch {
    return false;
  }
}

/**
 * @param {import("./api.js").RoomInfo} info
 * @returns {import("./context.js").LobbyState["mode"]}
 */
function lobbyModeFor(info) {
  if (!info.exists) return "create";
  if (storedKey()) return "moderator"; // a stale key is found out on identify
  return info.passwordRequired ? "password" : "join";
}

/** @param {import("./context.js").LobbyState["mode"]} mode */
function setLobbyMode(mode) {
  const m = MODES[mode];
  state.lobby.mode = mode;
  $("#join-form").dataset.mode = mode;
  $("#lobby-note").textContent = m.note;
  $("#lobby-note").hidden = !m.note;
  $("#password-field").hidden = !m.field;
  const input = $as("#password", HTMLInputElement);
  input.required = mode === "password"; // the form is novalidate: the lobby says what is missing
  if (m.field) {
    $("#password-label").textContent = m.label ?? "";
    $("#password-hint").textContent = m.hint ?? "";
    $("#password-hint").hidden = !m.hint;
    input.autocomplete = m.autocomplete ?? "off";
  }
}

/** @param {string} text  "" clears it */
function setLobbyMessage(text) {
  state.lobby.message = text;
  $("#join-error").textContent = text;
  $("#join-error").hidden = !text;
  $as("#password", HTMLInputElement).setAttribute("aria-invalid", String(!!text && state.lobby.mode === "password"));
}

/** Name and password from the form into `state`; false (and says why) when one is missing. */
function takeLobbyForm() {
  const mode = state.lobby.mode;
  const password = $("#password-field").hidden ? "" : $as("#password", HTMLInputElement).value;
  if (mode === "password" && !password) {
    setLobbyMessage("Type the room password to join.");
    $as("#password", HTMLInputElement).focus();
    return false;
  }
  state.name = ($as("#name", HTMLInputElement).value.trim() || "Guest").slice(0, 64);
  localStorage.setItem("arbiter.name", state.name);
  state.creating = mode === "create";
  // A new room's password goes to claimRoom; a protected room's to identify.
  state.password = password;
  if (state.creating) state.passwordRequired = !!password;
  setLobbyMessage("");
  return true;
}

/**
 * Back to the lobby after a refused join: `mode` "password" asks for the password (the room
 * has one, or the one given was wrong); `message` says what happened.
 *
 * @param {{message: string, mode?: import("./context.js").LobbyState["mode"]}} refusal
 */
export function reopenLobby({ message, mode }) {
  show("lobby");
  state.phase = "lobby";
  if (mode) setLobbyMode(mode);
  setLobbyMessage(message);
  $as("#preview", HTMLVideoElement).srcObject = media.cameraTrack ? new MediaStream([media.cameraTrack]) : null;
  $as("#join", HTMLButtonElement).disabled = false;
  renderMediaButtons();
  if (!$("#password-field").hidden) {
    $as("#password", HTMLInputElement).focus();
    $as("#password", HTMLInputElement).select();
  } else {
    $as("#join", HTMLButtonElement).focus();
  }
}

/** @param {{audio?: string, video?: string}} [change]  device ids picked */
async function openDevices(change) {
  $("#lobby-status").textContent = "Opening camera and microphone…";
  await (change ? media.chooseDevices(change) : media.open());
  $("#media-error").textContent = media.error;
  $("#lobby-status").textContent = "";
  $as("#preview", HTMLVideoElement).srcObject = media.cameraTrack ? new MediaStream([media.cameraTrack]) : null;
  const devices = await LocalMedia.devices();
  fillDevices($as("#mic-select", HTMLSelectElement), devices.audio, media.audioTrack?.getSettings().deviceId, "Microphone");
  fillDevices($as("#cam-select", HTMLSelectElement), devices.video, media.cameraTrack?.getSettings().deviceId, "Camera");
  renderMediaButtons();
}

/** @param {{audio?: string, video?: string}} change */
function reopenDevices(change) {
  state.mediaReady = openDevices(change);
}
