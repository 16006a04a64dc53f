// What we want of each remote participant's video (DESIGN section 4, "Quality"): one
// `preferences` frame per tile, `{"remotePeerId", "maxHeight", "paused"}`, so the SFU forwards
// the simulcast layer that fits the tile and nothing for a tile nobody can see.
//
// - maxHeight: the height the video is drawn at (object-fit: contain inside the tile), in CSS
//   pixels times devicePixelRatio, rounded: the device pixels a layer has to fill.
// - paused: the tile is off screen or has no size (IntersectionObserver, ResizeObserver), the
//   page is hidden (visibilitychange), or the publisher turned its video off. Video only: the
//   SFU keeps forwarding audio.
//
// A tile sends once when it is first measured, then only on a change, debounced per tile
// (300 ms: a window being dragged to a new size sends once); a height within 10 % of the one
// sent last is not a change.

/**
 * @typedef {object} PreferencesData  the `data` of a `preferences` action
 * @property {string} remotePeerId
 * @property {number} maxHeight
 * @property {boolean} paused
 */

/**
 * @typedef {object} WatchedTile  what a tile (ui.js Grid) gives us
 * @property {HTMLElement} node
 * @property {HTMLVideoElement} video
 * @property {{audio: boolean, video: boolean}} features
 */

/**
 * @typedef {object} Watch
 * @property {string} id
 * @property {WatchedTile} tile
 * @property {boolean | null} visible  the last IntersectionObserver verdict; null until the first
 * @property {PreferencesData | null} sent  the last frame sent for this tile
 * @property {ReturnType<typeof setTimeout> | null} timer
 * @property {() => void} onResize  the video element's `resize` listener (new dimensions)
 */

export const DEBOUNCE_MS = 300;
/** A maxHeight change smaller than this fraction of the one sent is not worth a frame. */
export const HEIGHT_STEP = 0.1;

export class TilePreferences {
  /**
   * @param {object} opts
   * @param {(data: PreferencesData) => boolean} opts.send  false when it could not be sent
   * @param {number} [opts.debounceMs]
   */
  constructor({ send, debounceMs = DEBOUNCE_MS }) {
    this.send = send;
    this.debounceMs = debounceMs;
    /** @type {Map<string, Watch>} remote peer id -> watch */
    this.watches = new Map();
    /** @type {Map<Element, Watch>} the observed element (the tile's video) -> watch */
    this.byElement = new Map();
    this.intersections = new IntersectionObserver((entries) => {
      for (const entry of entries) {
        const watch = this.byElement.get(entry.target);
        if (!watch) continue;
        const { width, height } = entry.intersectionRect;
        watch.visible = entry.isIntersecting && width > 0 && height > 0;
        this.changed(watch);
      }
    });
    this.sizes = new ResizeObserver((entries) => {
      for (const entry of entries) {
        const watch = this.byElement.get(entry.target);
        if (watch) this.changed(watch);
      }
    });
    document.addEventListener("visibilitychange", () => this.updateAll());
  }

  /**
   * Start reporting on a remote participant's tile (again a no-op for one already watched).
   *
   * @param {string} id  the publisher's id
   * @param {WatchedTile} tile
   */
  watch(id, tile) {
    const known = this.watches.get(id);
    if (known?.tile === tile) return;
    if (known) this.unwatch(id);
    /** @type {Watch} */
    const watch = { id, tile, visible: null, sent: null, timer: null, onResize: () => this.changed(watch) };
    this.watches.set(id, watch);
    this.byElement.set(tile.video, watch);
    tile.video.addEventListener("resize", watch.onResize);
    // The first IntersectionObserver callback (the next frame) measures the tile and sends.
    this.intersections.observe(tile.video);
    this.sizes.observe(tile.video);
  }

  /** @param {string} id */
  unwatch(id) {
    const watch = this.watches.get(id);
    if (!watch) return;
    clearTimeout(watch.timer ?? undefined);
    this.intersections.unobserve(watch.tile.video);
    this.sizes.unobserve(watch.tile.video);
    watch.tile.video.removeEventListener("resize", watch.onResize);
    this.byElement.delete(watch.tile.video);
    this.watches.delete(id);
  }

  /**
   * Something about the tile changed that no observer sees (the publisher's features).
   *
   * @param {string} id
   */
  update(id) {
    const watch = this.watches.get(id);
    if (watch) this.changed(watch);
  }

  updateAll() {
    for (const watch of this.watches.values()) this.changed(watch);
  }

  /**
   * What this tile asks for now.
   *
   * @param {Watch} watch
   * @returns {PreferencesData}
   */
  wanted(watch) {
    const { video, features } = watch.tile;
    const box = video.getBoundingClientRect();
    let drawn = box.height;
    if (video.videoWidth > 0 && video.videoHeight > 0) {
      // object-fit: contain draws the picture at the box's height, or less for a picture
      // wider than the box (a wide screen share in a 16:9 tile).
      drawn = Math.min(box.height, (box.width * video.videoHeight) / video.videoWidth);
    }
    const sized = box.width > 0 && box.height > 0;
    const paused = !watch.visible || !sized || document.hidden || features?.video === false;
    // A tile with no size keeps asking for the height it had: unpausing it needs no guess.
    const maxHeight = sized
      ? Math.round(drawn * (window.devicePixelRatio || 1))
      : (watch.sent?.maxHeight ?? 0);
    return { remotePeerId: watch.id, maxHeight, paused };
  }

  /**
   * Whether `next` is worth a frame after `prev`.
   *
   * @param {PreferencesData | null} prev
   * @param {PreferencesData} next
   */
  static differs(prev, next) {
    if (!prev || prev.paused !== next.paused) return true;
    if (next.paused) return false; // a paused tile's height is nobody's concern
    if (prev.maxHeight <= 0) return next.maxHeight > 0;
    return Math.abs(next.maxHeight - prev.maxHeight) >= HEIGHT_STEP * prev.maxHeight;
  }

  /** @param {Watch} watch */
  changed(watch) {
    if (watch.visible === null || this.watches.get(watch.id) !== watch) return; // not measured yet
    if (watch.sent === null) {
      this.flush(watch); // the tile's first frame goes at once
      return;
    }
    clearTimeout(watch.timer ?? undefined);
    watch.timer = null;
    if (!TilePreferences.differs(watch.sent, this.wanted(watch))) return;
    watch.timer = setTimeout(() => this.flush(watch), this.debounceMs);
  }

  /** @param {Watch} watch */
  flush(watch) {
    watch.timer = null;
    if (this.watches.get(watch.id) !== watch) return;
    const next = this.wanted(watch);
    if (!TilePreferences.differs(watch.sent, next)) return;
    if (this.send(next)) watch.sent = next;
  }

  /** The last frame sent per tile (the test hook reads it). */
  snapshot() {
    return [...this.watches.values()].map((w) => ({ id: w.id, sent: w.sent && { ...w.sent } }));
  }
}
