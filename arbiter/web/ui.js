// DOM: the tile grid, chat panel, banners and small helpers. No call logic lives here.

/**
 * The element for `selector`, which index.html has (a missing one is a bug, thrown at once).
 *
 * @param {string} selector
 * @param {ParentNode} [root]
 * @returns {HTMLElement}
 */
export function $(selector, root = document) {
  const node = root.querySelector(selector);
  if (!(node instanceof HTMLElement)) throw new Error(`no element ${selector}`);
  return node;
}

/**
 * `$` for an element of a given class (an input, a video, a dialog...), checked.
 *
 * @template {HTMLElement} T
 * @param {string} selector
 * @param {new (...args: any[]) => T} type
 * @returns {T}
 */
export function $as(selector, type) {
  const node = $(selector);
  if (!(node instanceof type)) throw new Error(`${selector} is not a ${type.name}`);
  return node;
}

/**
 * A new element: `attrs` "class", "text", data-*, aria-* and role set as such, anything else
 * as a property (false and null skipped); then the children that are not null.
 *
 * @template {keyof HTMLElementTagNameMap} K
 * @param {K} tag
 * @param {Record<string, unknown>} [attrs]
 * @param {...(Node | string | null | undefined)} children
 * @returns {HTMLElementTagNameMap[K]}
 */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === false || value == null) continue;
    if (key === "class") node.className = String(value);
    else if (key === "text") node.textContent = String(value);
    else if (key.startsWith("data-") || key.startsWith("aria-") || key === "role") {
      node.setAttribute(key, value === true ? "" : String(value));
    } else /** @type {Record<string, unknown>} */ (/** @type {unknown} */ (node))[key] = value;
  }
  node.append(.../** @type {(Node | string)[]} */ (children.filter((c) => c != null)));
  return node;
}

/** @type {Record<string, string>} */
const ICON_PATHS = {
  mic: "M12 14a3 3 0 0 0 3-3V5a3 3 0 0 0-6 0v6a3 3 0 0 0 3 3zm5-3a5 5 0 0 1-10 0H5a7 7 0 0 0 6 6.92V21h2v-3.08A7 7 0 0 0 19 11h-2z",
  micOff: "M19 11a7 7 0 0 1-1.2 3.9l-1.45-1.45A5 5 0 0 0 17 11h2zM15 11.2 9 5.2V5a3 3 0 0 1 6 0v6.2zM4.27 3 3 4.27l6 6V11a3 3 0 0 0 4.2 2.75l1.53 1.53A5 5 0 0 1 7 11H5a7 7 0 0 0 6 6.92V21h2v-3.08a6.9 6.9 0 0 0 3.18-1.13L19.73 21 21 19.73 4.27 3z",
  cam: "M17 10.5V7a1 1 0 0 0-1-1H4a1 1 0 0 0-1 1v10a1 1 0 0 0 1 1h12a1 1 0 0 0 1-1v-3.5l4 4v-11l-4 4z",
  camOff: "M21 6.5l-4 4V7a1 1 0 0 0-1-1H9.82L21 17.18V6.5zM3.27 2 2 3.27 4.73 6H4a1 1 0 0 0-1 1v10a1 1 0 0 0 1 1h12c.21 0 .39-.08.55-.18L19.73 21 21 19.73 3.27 2z",
  screen: "M20 18a2 2 0 0 0 2-2V6a2 2 0 0 0-2-2H4a2 2 0 0 0-2 2v10a2 2 0 0 0 2 2H0v2h24v-2h-4zM4 6h16v10H4V6zm8 1-4 4h3v3h2v-3h3l-4-4z",
  chat: "M20 2H4a2 2 0 0 0-2 2v18l4-4h14a2 2 0 0 0 2-2V4a2 2 0 0 0-2-2zm0 14H5.17L4 17.17V4h16v12z",
  leave: "M12 9c-1.6 0-3.15.25-4.6.72v3.1c0 .39-.23.74-.56.9-.98.49-1.87 1.12-2.66 1.85a.99.99 0 0 1-1.41-.01L.29 13.08A1 1 0 0 1 0 12.37c0-.28.11-.53.29-.71C3.34 8.78 7.46 7 12 7s8.66 1.78 11.71 4.67c.18.18.29.43.29.71 0 .28-.11.53-.29.71l-2.48 2.48a1 1 0 0 1-1.41.01 11.4 11.4 0 0 0-2.67-1.85.99.99 0 0 1-.56-.9v-3.1A15.9 15.9 0 0 0 12 9z",
  link: "M3.9 12a3.1 3.1 0 0 1 3.1-3.1h4V7H7a5 5 0 0 0 0 10h4v-1.9H7A3.1 3.1 0 0 1 3.9 12zM8 13h8v-2H8v2zm9-6h-4v1.9h4a3.1 3.1 0 0 1 0 6.2h-4V17h4a5 5 0 0 0 0-10z",
  close: "M19 6.41 17.59 5 12 10.59 6.41 5 5 6.41 10.59 12 5 17.59 6.41 19 12 13.41 17.59 19 19 17.59 13.41 12z",
  send: "M2.01 21 23 12 2.01 3 2 10l15 2-15 2z",
  shield: "M12 1 3 5v6c0 5.55 3.84 10.74 9 12 5.16-1.26 9-6.45 9-12V5l-9-4zm-2 16-4-4 1.41-1.41L10 14.17l6.59-6.59L18 9l-8 8z",
  lock: "M18 8h-1V6A5 5 0 0 0 7 6v2H6a2 2 0 0 0-2 2v10a2 2 0 0 0 2 2h12a2 2 0 0 0 2-2V10a2 2 0 0 0-2-2zM9 6a3 3 0 0 1 6 0v2H9V6zm3 11a2 2 0 1 1 0-4 2 2 0 0 1 0 4z",
  lockOpen: "M18 8h-1V6A5 5 0 0 0 7.1 5h2.02A3 3 0 0 1 15 6v2H6a2 2 0 0 0-2 2v10a2 2 0 0 0 2 2h12a2 2 0 0 0 2-2V10a2 2 0 0 0-2-2zm0 12H6V10h12v10zm-6-3a2 2 0 1 0 0-4 2 2 0 0 0 0 4z",
  key: "M12.65 10A6 6 0 1 0 12.65 14H17v4h4v-4h2v-4H12.65zM7 14a2 2 0 1 1 0-4 2 2 0 0 1 0 4z",
  speakerView: "M3 4h18a1 1 0 0 1 1 1v9a1 1 0 0 1-1 1H3a1 1 0 0 1-1-1V5a1 1 0 0 1 1-1zm1 2v7h16V6H4zM2 17h6v3H2v-3zm7 0h6v3H9v-3zm7 0h6v3h-6v-3z",
  gridView: "M3 3h8v8H3V3zm2 2v4h4V5H5zm8-2h8v8h-8V3zm2 2v4h4V5h-4zM3 13h8v8H3v-8zm2 2v4h4v-4H5zm8-2h8v8h-8v-8zm2 2v4h4v-4h-4z",
  personRemove: "M14 8a4 4 0 1 0-8 0 4 4 0 0 0 8 0zm3 2v2h6v-2h-6zM2 18v2h16v-2c0-2.66-5.33-4-8-4s-8 1.34-8 4z",
};

/**
 * An inline SVG icon (aria-hidden).
 *
 * @param {string} name  a key of ICON_PATHS
 * @returns {SVGSVGElement}
 */
export function icon(name) {
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("focusable", "false");
  svg.classList.add("icon");
  const path = document.createElementNS("http://www.w3.org/2000/svg", "path");
  path.setAttribute("d", ICON_PATHS[name]);
  svg.append(path);
  return svg;
}

/**
 * Put `name`'s icon into every [data-icon=name] placeholder.
 *
 * @param {ParentNode} [root]
 */
export function hydrateIcons(root = document) {
  for (const slot of root.querySelectorAll("[data-icon]")) {
    slot.replaceChildren(icon(slot.getAttribute("data-icon") || ""));
  }
}

/**
 * One or two capital letters for an avatar.
 *
 * @param {string} name
 */
export function initials(name) {
  const parts = String(name || "?").trim().split(/\s+/).filter(Boolean);
  const letters = parts.length > 1 ? parts[0][0] + parts[parts.length - 1][0] : (parts[0] || "?").slice(0, 2);
  return letters.toUpperCase();
}

/** @typedef {"speaker" | "grid"} Layout */

/**
 * The layouts, the first being the default.
 *
 * @type {readonly Layout[]}
 */
export const LAYOUTS = Object.freeze(["speaker", "grid"]);

/** @typedef {{audio: boolean, video: boolean}} Features  what a participant sends */

/**
 * One participant's tile and the parts of it that change.
 *
 * @typedef {object} Tile
 * @property {string | symbol} id  a remote peer id, or the caller's own key (a Symbol)
 * @property {string} [name]
 * @property {HTMLDivElement} node
 * @property {HTMLVideoElement} video
 * @property {HTMLAudioElement | null} audio  null on our own tile
 * @property {HTMLDivElement} avatar
 * @property {HTMLDivElement} status
 * @property {HTMLSpanElement} quality
 * @property {HTMLSpanElement} label
 * @property {HTMLSpanElement} muted
 * @property {HTMLSpanElement} camOff
 * @property {HTMLSpanElement} moderator
 * @property {HTMLDivElement} actions
 * @property {boolean} self
 * @property {Features} features
 * @property {string | null} [actionsFor]  whose name the moderator buttons carry (moderation.js)
 */

const ASPECT = 16 / 9; // every tile's shape: camera video fills it, no bars
const STRIP_SHARE = 0.22; // of the grid's height, for the strip under the speaker
const STRIP_MAX_H = 180; // px
const STRIP_MIN_W = 112; // px: narrower strip tiles wrap (and the grid scrolls)

/**
 * The participant grid: one 16:9 tile per participant. Layout "grid": equal tiles in the rows
 * and columns that make them largest. Layout "speaker": the active speaker (or, until the SFU
 * names one, the first other participant) large on top, the others in a strip below; with two
 * people in a wide window, ours beside theirs (class "side-by-side").
 */
export class Grid {
  /** @param {HTMLElement} root */
  constructor(root) {
    this.root = root;
    // Remote peer id (a string from the server) or the caller's own key for its self view
    // (context.js makes it a Symbol, so no peer id can name it) -> {node, video, audio, ...}.
    /** @type {Map<string | symbol, Tile>} */
    this.tiles = new Map();
    // The remote peer the SFU reports as the dominant speaker (activeSpeaker).
    /** @type {string | null} */
    this.speaker = null;
    /** @type {Layout} */
    this.mode = LAYOUTS[0];
    new ResizeObserver(() => this.layout()).observe(root);
  }

  /** @param {string} mode  a Layout; anything else is the default */
  setMode(mode) {
    this.mode = LAYOUTS.find((l) => l === mode) ?? LAYOUTS[0];
    this.layout();
  }

  /**
   * The tile for `id`, made if it is new (and renamed if not).
   *
   * @param {string | symbol} id
   * @param {{name: string, self?: boolean}} opts
   * @returns {Tile}
   */
  add(id, { name, self = false }) {
    let tile = this.tiles.get(id);
    if (tile) {
      this.setName(id, name);
      return tile;
    }
    const video = el("video", { autoplay: true, playsInline: true, muted: true, class: "tile-video" });
    const avatar = el("div", { class: "avatar", "aria-hidden": "true" });
    const status = el("div", { class: "tile-status", "data-testid": "tile-status" });
    const quality = el("span", { class: "quality", role: "img", "data-testid": "quality" },
      el("i"), el("i"), el("i"));
    const label = el("span", { class: "tile-name", "data-testid": "tile-name" });
    const muted = el("span", { class: "badge", "data-testid": "badge-muted", hidden: true, title: "Microphone off" });
    muted.append(icon("micOff"), el("span", { class: "visually-hidden", text: "microphone off" }));
    const camOff = el("span", { class: "badge", "data-testid": "badge-camera-off", hidden: true, title: "Camera off" });
    camOff.append(icon("camOff"), el("span", { class: "visually-hidden", text: "camera off" }));
    const moderator = el("span", { class: "badge moderator", "data-testid": "badge-moderator", hidden: true, title: "Moderator" });
    moderator.append(icon("shield"), el("span", { class: "visually-hidden", text: "moderator" }));
    const plate = el("div", { class: "nameplate" }, quality, label, moderator, muted, camOff);
    // Buttons a moderator has on this tile (moderation.js fills it).
    const actions = el("div", { class: "tile-actions", "data-testid": "tile-actions", hidden: true });
    const node = el(
      "div",
      {
        class: "tile connecting",
        role: "listitem",
        "data-testid": "tile",
        "data-peer-id": self ? null : id, // an attribute value (never markup or a selector here)
        "data-self": self,
      },
      video, avatar, status, plate, actions,
    );
    if (self) {
      node.classList.add("self", "mirrored");
      quality.hidden = true;
    }
    const audio = self ? null : el("audio", { autoplay: true });
    if (audio) node.append(audio);
    /** @type {Tile} */
    const made = {
      id, node, video, audio, avatar, status, quality, label, muted, camOff, moderator, actions, self,
      features: { audio: true, video: true },
    };
    this.tiles.set(id, made);
    this.setName(id, name);
    this.setStatus(id, self ? "" : "connecting…");
    // Self first, then in join order.
    if (self) this.root.prepend(node);
    else this.root.append(node);
    this.layout();
    return made;
  }

  /** @param {string | symbol} id */
  get(id) {
    return this.tiles.get(id);
  }

  /** @param {string | symbol} id */
  remove(id) {
    const tile = this.tiles.get(id);
    if (!tile) return;
    tile.video.srcObject = null;
    if (tile.audio) tile.audio.srcObject = null;
    tile.node.remove();
    this.tiles.delete(id);
    this.layout();
  }

  clearRemote() {
    for (const tile of [...this.tiles.values()]) if (!tile.self) this.remove(tile.id);
  }

  /**
   * @param {string | symbol} id
   * @param {string} name  "" for a guest
   */
  setName(id, name) {
    const tile = this.tiles.get(id);
    if (!tile) return;
    tile.name = name || "Guest";
    tile.label.textContent = tile.self ? `${tile.name} (you)` : tile.name;
    tile.avatar.textContent = initials(tile.name);
  }

  /**
   * @param {string | symbol} id
   * @param {string} text  "" hides the status
   */
  setStatus(id, text) {
    const tile = this.tiles.get(id);
    if (!tile) return;
    tile.status.textContent = text;
    tile.status.hidden = !text;
    tile.node.classList.toggle("connecting", !!text);
  }

  /**
   * @param {string | symbol} id
   * @param {Features} features
   */
  setFeatures(id, { audio, video }) {
    const tile = this.tiles.get(id);
    if (!tile) return;
    tile.features = { audio: !!audio, video: !!video };
    tile.muted.hidden = !!audio;
    tile.camOff.hidden = !!video;
    tile.node.classList.toggle("camera-off", !video);
    tile.node.dataset.muted = String(!audio);
    tile.node.dataset.cameraOff = String(!video);
  }

  /**
   * @param {string | symbol} id
   * @param {boolean} on
   */
  setModerator(id, on) {
    const tile = this.tiles.get(id);
    if (!tile) return;
    tile.moderator.hidden = !on;
    tile.node.dataset.moderator = String(!!on);
  }

  /**
   * Replace the tile's action buttons (none: the row is hidden).
   *
   * @param {string | symbol} id
   * @param {HTMLElement[]} buttons
   */
  setActions(id, buttons) {
    const tile = this.tiles.get(id);
    if (!tile) return;
    tile.actions.replaceChildren(...buttons);
    tile.actions.hidden = buttons.length === 0;
  }

  /**
   * @param {string | symbol} id
   * @param {MediaStreamTrack | null} track
   * @param {{mirror?: boolean}} [opts]  mirror: flip the picture (our camera)
   */
  setVideo(id, track, { mirror } = {}) {
    const tile = this.tiles.get(id);
    if (!tile) return;
    const shown = tile.video.srcObject;
    const current = shown instanceof MediaStream ? shown.getVideoTracks()[0] : undefined;
    if (current !== track) tile.video.srcObject = track ? new MediaStream([track]) : null;
    if (mirror !== undefined) tile.node.classList.toggle("mirrored", mirror);
    tile.video.play().catch(() => {});
  }

  /**
   * @param {string | symbol} id
   * @param {MediaStreamTrack} track
   */
  setAudio(id, track) {
    const tile = this.tiles.get(id);
    if (!tile?.audio) return;
    tile.audio.srcObject = new MediaStream([track]);
    tile.audio.play().catch(() => {});
  }

  /** The room's dominant speaker: large in the speaker layout, outlined in the grid. Never
   * our own tile: `id` is a remote peer id (our tile's key is a Symbol).
   *
   * @param {string} id
   */
  setActiveSpeaker(id) {
    this.speaker = id;
    this.layout();
  }

  /**
   * @param {string | symbol} id
   * @param {boolean} speaking
   */
  setSpeaking(id, speaking) {
    this.tiles.get(id)?.node.classList.toggle("speaking", speaking);
  }

  /**
   * @param {string} id
   * @param {"good" | "fair" | "poor"} quality
   * @param {string} [detail]  loss, jitter and rtt, for the tooltip
   */
  setQuality(id, quality, detail = "") {
    const tile = this.tiles.get(id);
    if (!tile || tile.self) return;
    tile.quality.dataset.quality = quality;
    tile.quality.setAttribute("aria-label", `Connection ${quality}`);
    tile.quality.title = `Connection ${quality}${detail ? ` (${detail})` : ""}`;
  }

  /**
   * The tile shown large: the active speaker in the speaker layout (never our own tile),
   * else the first remote one; none in the grid layout or alone.
   */
  largeTile() {
    if (this.mode !== "speaker" || this.tiles.size < 2) return null;
    const speaker = this.speaker === null ? undefined : this.tiles.get(this.speaker);
    if (speaker && !speaker.self) return speaker;
    for (const tile of this.tiles.values()) if (!tile.self) return tile;
    return null;
  }

  /** Size the tiles (CSS variables --tile-w/--tile-h, --big-w/--big-h), always 16:9. */
  layout() {
    const n = Math.max(1, this.tiles.size);
    const large = this.largeTile();
    const speaker = this.speaker === null ? undefined : this.tiles.get(this.speaker);
    for (const tile of this.tiles.values()) {
      tile.node.classList.toggle("large", tile === large);
      tile.node.classList.toggle("active-speaker", !!speaker && !speaker.self && tile === speaker && n > 1);
    }
    this.root.classList.toggle("has-speaker", !!large);
    // Side by side only while laid out: a grid with no height left keeps the tiles stacked,
    // which it can scroll through.
    this.root.classList.remove("side-by-side");
    this.root.classList.toggle("layout-speaker", this.mode === "speaker");
    this.root.classList.toggle("layout-grid", this.mode === "grid");
    this.root.dataset.layout = this.mode;
    this.root.dataset.count = String(n);
    const style = getComputedStyle(this.root);
    const gap = parseFloat(style.columnGap) || 0;
    const width = this.root.clientWidth - (parseFloat(style.paddingLeft) || 0) - (parseFloat(style.paddingRight) || 0);
    const height = this.root.clientHeight - (parseFloat(style.paddingTop) || 0) - (parseFloat(style.paddingBottom) || 0);
    if (width <= 0 || height <= 0) return;
    const px = (/** @type {string} */ name, /** @type {number} */ value) => this.root.style.setProperty(name, `${Math.max(0, Math.floor(value))}px`);
    if (large) {
      // The strip: n - 1 tiles in one row, as tall as STRIP_SHARE of the grid allows.
      const k = n - 1;
      let stripW = Math.min(height * STRIP_SHARE, STRIP_MAX_H) * ASPECT;
      if (k * stripW + (k - 1) * gap > width) stripW = Math.max(STRIP_MIN_W, (width - (k - 1) * gap) / k);
      const bigW = Math.min(width, (height - stripW / ASPECT - gap) * ASPECT);
      // Two people: our tile beside theirs rather than below, when that makes theirs larger
      // (a window wider than 16:9): theirs as tall as the grid, ours taking the rest of the
      // row, so the two fill the width without bars at the sides.
      const sideW = Math.min(height * ASPECT, width - gap - stripW);
      const beside = k === 1 && sideW > bigW;
      if (beside) this.root.classList.add("side-by-side");
      if (beside) {
        const ownW = Math.min(width - gap - sideW, sideW);
        px("--tile-w", ownW);
        px("--tile-h", ownW / ASPECT);
        px("--big-w", sideW);
        px("--big-h", sideW / ASPECT);
        return;
      }
      px("--tile-w", stripW);
      px("--tile-h", stripW / ASPECT);
      px("--big-w", bigW);
      px("--big-h", bigW / ASPECT);
      return;
    }
    let best = 0;
    for (let cols = 1; cols <= n; cols++) {
      const rows = Math.ceil(n / cols);
      const w = (width - gap * (cols - 1)) / cols;
      const h = (height - gap * (rows - 1)) / rows;
      best = Math.max(best, Math.min(w, h * ASPECT));
    }
    px("--tile-w", best);
    px("--tile-h", best / ASPECT);
  }
}

/**
 * A chat frame (docs/PROTOCOL.md section 3); untrusted.
 *
 * @typedef {{sender?: unknown, name?: unknown, content: string, ts?: unknown}} ChatMessage
 */

/** The chat panel: history plus live messages, sent with Enter or the send button. */
export class Chat {
  /**
   * @param {object} opts
   * @param {HTMLElement} opts.log
   * @param {HTMLElement} opts.form
   * @param {HTMLInputElement} opts.input
   * @param {(text: string) => boolean} opts.onSend  false when it could not be sent
   * @param {(unread: number) => void} opts.onUnread
   */
  constructor({ log, form, input, onSend, onUnread }) {
    this.log = log;
    this.input = input;
    /** @type {ChatMessage[]} */
    this.messages = [];
    this.unread = 0;
    this.visible = false;
    this.onUnread = onUnread;
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const text = input.value.trim();
      if (!text) return;
      if (onSend(text.slice(0, 2000))) input.value = "";
    });
  }

  /** @param {unknown} messages  the chatHistory frame's list (untrusted) */
  setHistory(messages) {
    this.messages = [];
    this.log.replaceChildren();
    for (const m of Array.isArray(messages) ? messages : []) this.add(m, { quiet: true });
  }

  /**
   * @param {unknown} frame  a chat frame (untrusted: anything without a string content is dropped)
   * @param {{quiet?: boolean}} [opts]  quiet: not counted as unread (history)
   */
  add(frame, { quiet = false } = {}) {
    if (!frame || typeof frame !== "object") return;
    const message = /** @type {ChatMessage} */ (frame);
    if (typeof message.content !== "string") return;
    this.messages.push(message);
    const ts = typeof message.ts === "number" ? message.ts : NaN;
    const when = Number.isFinite(ts) && ts > 0 ? new Date(ts * 1000) : new Date();
    if (Number.isNaN(when.getTime())) when.setTime(Date.now()); // out of Date's range
    const time = el("time", {
      dateTime: when.toISOString(),
      text: when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }),
    });
    const item = el(
      "li",
      { class: "chat-message", "data-testid": "chat-message" },
      el("div", { class: "chat-meta" }, el("strong", { text: String(message.name || message.sender || "?") }), time),
      el("p", { class: "chat-text", text: message.content }),
    );
    this.log.append(item);
    this.log.scrollTop = this.log.scrollHeight;
    if (!quiet && !this.visible) {
      this.unread++;
      this.onUnread?.(this.unread);
    }
  }

  /** @param {boolean} visible */
  show(visible) {
    this.visible = visible;
    if (visible) {
      this.unread = 0;
      this.onUnread?.(0);
      this.log.scrollTop = this.log.scrollHeight;
    }
  }
}

/** @type {ReturnType<typeof setTimeout> | undefined} */
let toastTimer;

/** @param {string} text  shown for 2.5 s */
export function toast(text) {
  const node = $("#toast");
  node.textContent = text;
  node.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => {
    node.hidden = true;
  }, 2500);
}

/**
 * @param {string} text  "" hides it
 * @param {string} [kind]  info | warn | error (its colours)
 */
export function banner(text, kind = "warn") {
  const node = $("#banner");
  node.textContent = text || "";
  node.hidden = !text;
  node.dataset.kind = kind;
}

/**
 * Fill a <select> with devices, keeping `selected` if it is still there.
 *
 * @param {HTMLSelectElement} select
 * @param {MediaDeviceInfo[]} devices
 * @param {string | undefined} selected  a deviceId
 * @param {string} fallbackLabel  "Microphone" or "Camera"
 */
export function fillDevices(select, devices, selected, fallbackLabel) {
  select.replaceChildren();
  if (!devices.length) {
    select.append(el("option", { value: "", text: `No ${fallbackLabel.toLowerCase()} found` }));
    select.disabled = true;
    return;
  }
  select.disabled = false;
  devices.forEach((d, i) => {
    select.append(el("option", { value: d.deviceId, text: d.label || `${fallbackLabel} ${i + 1}` }));
  });
  if (selected && devices.some((d) => d.deviceId === selected)) select.value = selected;
}
