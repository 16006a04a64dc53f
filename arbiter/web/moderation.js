// Room access as the person sees it (docs/PROTOCOL.md: passwords, moderators, lock):
// - the moderator key: kept per room in localStorage (the creator's, from claimRoom, or one
//   taken from a `#mod=<key>` link, whose fragment is then removed from the address bar);
// - moderators' controls: Mute and Remove on other non-moderators' tiles, Lock room / Unlock,
//   the room password, and copying the moderator link;
// - what everyone sees: moderator badges, the lock indicator, and who muted or removed them.
// Names reach the page only through textContent.

import { grid, notify, roomLink, roomPath, SELF, send, state } from "./context.js";
import { copyText, setIcon, setMic } from "./controls.js";
import { $, $as, el, icon, toast } from "./ui.js";

const KEY_PREFIX = "arbiter.moderatorKey.";
const KEY_PATTERN = /^[\x21-\x7e]{1,256}$/; // printable ASCII: what a URL-safe token is made of

// ------------------------------------------------------------------ the moderator key

export function storedKey() {
  try {
    const key = localStorage.getItem(KEY_PREFIX + roomPath) || "";
    return KEY_PATTERN.test(key) ? key : "";
  } catch {
    return "";
  }
}

/** @param {string} key  a moderator key (kept only when it looks like one) */
export function storeKey(key) {
  if (!KEY_PATTERN.test(key)) return;
  try {
    localStorage.setItem(KEY_PREFIX + roomPath, key);
  } catch {
    // storage refused (private mode): the key still serves this page
  }
}

export function forgetKey() {
  try {
    localStorage.removeItem(KEY_PREFIX + roomPath);
  } catch {
    // nothing stored
  }
}

/**
 * A page opened with `#mod=<key>` stores the key for this room and takes the fragment out of
 * the address bar (and so out of history, bookmarks and screenshots of the URL).
 */
export function takeKeyFromFragment() {
  const match = /^#mod=([^&]*)/.exec(location.hash);
  if (!match) return false;
  let key = "";
  try {
    key = decodeURIComponent(match[1]);
  } catch {
    key = "";
  }
  history.replaceState(history.state, "", location.pathname + location.search);
  if (!roomPath || !KEY_PATTERN.test(key)) return false;
  storeKey(key);
  return true;
}

// ------------------------------------------------------------------ frames

/**
 * `identified`: are we a moderator, is the room locked. A key that was not accepted is stale.
 *
 * @param {import("./signaling.js").ServerFrame} frame
 */
export function onIdentified(frame) {
  state.moderator = frame.moderator === true;
  state.locked = frame.locked === true;
  if (state.moderatorKey && !state.moderator) keyRefused();
  renderRoomState();
}

/** A refusal (or a plain admission) while we presented a key: the room no longer has it. */
export function keyRefused() {
  if (state.moderatorKey && state.moderatorKey === storedKey()) forgetKey();
  state.moderatorKey = "";
}

/** @param {import("./signaling.js").ServerFrame} msg  a roomState frame */
export function onRoomState(msg) {
  if (typeof msg.locked === "boolean" && msg.locked !== state.locked) {
    state.locked = msg.locked;
    notify(msg.locked ? "The room is locked: nobody else can join" : "The room is unlocked");
  }
  const before = state.passwordRequired;
  if (typeof msg.passwordRequired === "boolean" && msg.passwordRequired !== before) {
    state.passwordRequired = msg.passwordRequired;
    if (state.moderator && before !== null) notify(msg.passwordRequired ? "The room password is set" : "The room password is removed");
  }
  renderRoomState();
}

/**
 * @param {import("./signaling.js").ServerFrame} msg
 * @param {string} byName  the moderator's name
 */
export function onMuteRequest(msg, byName) {
  setMic(false);
  notify(`${byName} muted your microphone`);
}

/**
 * @param {import("./signaling.js").ServerFrame} msg
 * @param {string} byName  the moderator's name
 */
export function onKicked(msg, byName) {
  state.removedBy = byName;
}

/** @param {import("./signaling.js").ServerFrame} msg  an error frame for `moderate` */
export function onModerateError(msg) {
  const text = typeof msg.message === "string" ? msg.message : "refused";
  toast(`Not done: ${text}`);
}

// ------------------------------------------------------------------ controls

/**
 * @param {"kick" | "mute" | "lock" | "unlock" | "password"} op
 * @param {{target?: string, password?: string | null}} [data]
 */
function moderate(op, data = {}) {
  if (!send("moderate", { op, ...data })) toast("Not connected: try again in a moment");
}

/**
 * Mute and Remove on a peer's tile: for moderators, on everyone but moderators. Buttons are
 * rebuilt only when what they say changes (a rebuilt button would lose the keyboard focus).
 *
 * @param {string} id
 */
export function renderTileActions(id) {
  const peer = state.peers.get(id);
  const tile = grid.get(id);
  if (!peer || !tile) return;
  const wanted = state.moderator && !peer.moderator ? peer.name : null;
  if (tile.actionsFor === wanted) return;
  tile.actionsFor = wanted;
  if (wanted === null) {
    grid.setActions(id, []);
    return;
  }
  /**
   * @param {string} iconName
   * @param {string} text
   * @param {string} testid
   * @param {(event: MouseEvent) => void} onClick
   */
  const button = (iconName, text, testid, onClick) => {
    const b = el("button", { type: "button", class: "tile-action", title: text.split(" ")[0], "data-testid": testid },
      icon(iconName), el("span", { class: "visually-hidden", text }));
    b.addEventListener("click", onClick);
    return b;
  };
  grid.setActions(id, [
    button("micOff", `Mute ${peer.name}`, "mute-peer", () => {
      moderate("mute", { target: id });
      toast(`You muted ${state.peers.get(id)?.name ?? peer.name}`);
    }),
    button("personRemove", `Remove ${peer.name}`, "remove-peer", (event) =>
      confirmRemove(id, /** @type {HTMLElement} */ (event.currentTarget)),
    ),
  ]);
}

// Where the keyboard focus goes when the Remove dialog closes (the button that opened it).
/** @type {HTMLElement | null} */
let confirmReturnFocus = null;

/**
 * @param {string} id
 * @param {HTMLElement} opener  the button that asked
 */
function confirmRemove(id, opener) {
  const peer = state.peers.get(id);
  if (!peer) return;
  const dialog = $as("#confirm-dialog", HTMLDialogElement);
  $("#confirm-title").textContent = `Remove ${peer.name} from the call?`;
  $("#confirm-detail").textContent = "They can come back unless the room is locked.";
  dialog.dataset.target = id; // an attribute value only
  confirmReturnFocus = opener;
  dialog.showModal();
  $("#confirm-cancel").focus();
}

/** Topbar and self tile: lock indicator for all; controls and badge for moderators. */
export function renderRoomState() {
  $("#lock-indicator").hidden = !state.locked;
  $("#mod-controls").hidden = !state.moderator;
  grid.setModerator(SELF, state.moderator);
  const lock = $("#lock-toggle");
  const label = state.locked ? "Unlock room" : "Lock room";
  lock.setAttribute("aria-label", label);
  $(".label", lock).textContent = label;
  lock.classList.toggle("active", state.locked);
  setIcon(lock, state.locked ? "lock" : "lockOpen");
  $("#copy-mod-link").hidden = !state.moderatorKey;
  for (const id of state.peers.keys()) renderTileActions(id);
}

function openPasswordDialog() {
  const known = { true: "This room has a password.", false: "This room has no password." };
  $("#password-state").textContent = state.passwordRequired === null ? "" : known[`${state.passwordRequired}`];
  $as("#new-password", HTMLInputElement).value = "";
  $("#password-dialog-error").textContent = "";
  $as("#password-dialog", HTMLDialogElement).showModal();
  $as("#new-password", HTMLInputElement).focus();
}

/** Listeners for the moderator controls and the dialogs (once, at start). */
export function setupModeration() {
  $("#lock-toggle").addEventListener("click", () => moderate(state.locked ? "unlock" : "lock"));
  $("#password-open").addEventListener("click", () => openPasswordDialog());
  $("#copy-mod-link").addEventListener("click", () => {
    if (state.moderatorKey) {
      copyText(roomLink(`#mod=${encodeURIComponent(state.moderatorKey)}`), "Moderator link copied: it makes whoever opens it a moderator");
    }
  });

  const confirm = $as("#confirm-dialog", HTMLDialogElement);
  confirm.addEventListener("close", () => {
    if (confirmReturnFocus?.isConnected) confirmReturnFocus.focus();
    confirmReturnFocus = null;
  });
  $("#confirm-cancel").addEventListener("click", () => confirm.close());
  $("#confirm-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const id = confirm.dataset.target ?? "";
    const name = state.peers.get(id)?.name;
    confirmReturnFocus = $("#controls"); // the tile goes away with them
    confirm.close();
    if (name === undefined) return;
    moderate("kick", { target: id });
    toast(`Removing ${name}…`);
  });

  const dialog = $as("#password-dialog", HTMLDialogElement);
  $("#password-cancel").addEventListener("click", () => dialog.close());
  $("#password-remove").addEventListener("click", () => {
    moderate("password", { password: null });
    dialog.close();
  });
  $("#password-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $as("#new-password", HTMLInputElement).value;
    if (!value) {
      $("#password-dialog-error").textContent = "Type a password, or choose Remove password.";
      $as("#new-password", HTMLInputElement).focus();
      return;
    }
    moderate("password", { password: value });
    dialog.close();
  });
  dialog.addEventListener("close", () => $("#password-open").focus());
}
