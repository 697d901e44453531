// The face studio page: edit a face through its latent z (a grid of gray cells), attribute
// sliders, saved faces, interpolation, and the optional completion / photo panels.
// Vue 3's browser build is served by the studio (/vendor/vue.js, from studio/node_modules).
import { createApp, nextTick } from "vue";

const DEBOUNCE_MS = 50;        // painting -> at most one update request per 50 ms
const HEALTH_EVERY_MS = 3000;  // while the server is unreachable
const FINE = 0.02;             // wheel / arrow-key step, as a fraction of z's range
const JOB_POLL_MS = 250;       // how often a running completion / projection is asked about
const WARM_POLL_MS = 2000;     // how often /api/model is asked about the warm-up, only while it runs
// Who this tab is to the server's job queue (its share of the queue is per client).
const CLIENT_ID = sessionStorage.getItem("facegan-client") || (() => {
  const id = Array.from(crypto.getRandomValues(new Uint8Array(12)), (b) => b.toString(16).padStart(2, "0")).join("");
  sessionStorage.setItem("facegan-client", id);
  return id;
})();

// --- helpers ------------------------------------------------------------------------------
class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(path, body, { raw = false, method } = {}) {
  let response;
  const headers = { "X-Client-Id": CLIENT_ID };
  try {
    response = await fetch(path, body === undefined ? { method: method || "GET", headers } : {
      method: method || "POST", headers: { ...headers, "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
  } catch (e) {
    throw new ApiError(0, "The studio server is unreachable (is facegan-studio still running?).");
  }
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try { message = (await response.json()).error || message; } catch (e) { /* not JSON */ }
    const retry = response.headers.get("Retry-After");
    if (response.status === 429 && retry) message += ` (retry in about ${retry} s)`;
    throw new ApiError(response.status, `Request failed (${response.status}): ${message}`);
  }
  return raw ? response : response.json();
}
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function b64urlFromFloats(values) {
  const bytes = new Uint8Array(new Float32Array(values).buffer);
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function floatsFromB64url(text) {
  const s = atob(text.replace(/-/g, "+").replace(/_/g, "/"));
  const bytes = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) bytes[i] = s.charCodeAt(i);
  if (bytes.length % 4) throw new Error("not a float32 vector");
  return Array.from(new Float32Array(bytes.buffer));
}

const round = (v, digits = 4) => Number(v.toFixed(digits));
// z values are kept as float32 numbers (what the generator sees), so a share link,
// which carries the float32 bytes, reproduces them exactly.
const clone = (state) => JSON.parse(JSON.stringify(state));
const blobToDataUrl = (blob) => new Promise((resolve) => {
  const reader = new FileReader();
  reader.onload = () => resolve(reader.result);
  reader.readAsDataURL(blob);
});

// --- the page -----------------------------------------------------------------------------
const App = {
  data() {
    return {
      models: [], modelId: null, info: null,
      z: [], c: {}, offsets: {}, locks: [], seed: null,
      base: null, history: [], future: [],
      imageUrl: "", imageBlob: null, wanted: 0, shown: 0, inFlight: false,
      error: "", notice: "", down: false,
      brush: 0.25, touchDirection: 1, focused: 0, pixelated: false,
      zText: "", pasteText: "", pasteError: "",
      saved: [], interpA: 0, interpB: 1, interpSteps: 8, frames: [], interpBusy: false,
      tab: "edit",
      upload: { faces: [], chosen: 0, busy: false, error: "" },
      project: { result: null, busy: false, job: null },
      complete: { result: null, busy: false, drawing: false, job: null },
    };
  },
  watch: {
    tab(now) {  // back on the Complete tab: its canvas is new, draw the face and the mask again
      if (now === "complete" && this.upload.faces.length) nextTick(() => this.drawMask(true));
    },
    notice(text) {  // a passing note, not an error: it goes away by itself
      clearTimeout(this.noticeTimer);
      if (text) this.noticeTimer = setTimeout(() => { this.notice = ""; }, 5000);
    },
  },
  computed: {
    range() { return this.info ? this.info.z.range : [-1, 1]; },
    cols() { return Math.ceil(Math.sqrt(this.z.length || 100)); },
    directions() { return this.info ? this.info.directions : []; },
    extraInputs() { return this.info ? this.info.inputs : []; },
    features() { return (this.info && this.info.features) || {}; },
    current() { return this.models.find((m) => m.id === this.modelId) || null; },
    shareUrl() { return location.origin + location.pathname + "#" + this.hashOf(); },
  },
  async mounted() {
    window.addEventListener("pointerup", this.paintEnd);
    window.addEventListener("pointercancel", this.paintEnd);
    window.addEventListener("keydown", this.globalKey);
    window.addEventListener("hashchange", this.fromHash);
    window.addEventListener("pagehide", this.abandonJobs);
    try {
      const listing = await api("/api/models");
      this.models = listing.models;
      const wanted = new URLSearchParams(location.hash.slice(1)).get("m");
      const id = this.models.some((m) => m.id === wanted) ? wanted : listing.default;
      await this.loadModel(id, { fromHash: true });
    } catch (e) {
      this.fail(e);
    }
  },
  methods: {
    // ---- models -------------------------------------------------------------------------
    async loadModel(id, { fromHash = false } = {}) {
      this.info = await api("/api/model?id=" + encodeURIComponent(id));
      this.modelId = id;
      this.followWarmUp();
      this.history = []; this.future = []; this.frames = [];
      this.saved = JSON.parse(localStorage.getItem(this.savedKey()) || "[]");
      this.interpA = 0; this.interpB = Math.min(1, Math.max(this.saved.length - 1, 0));
      this.offsets = Object.fromEntries(this.directions.map((d) => [d.name, 0]));
      this.locks = [];
      if (!(fromHash && this.fromHash())) await this.random();
      this.base = this.snapshot();
    },
    followWarmUp() {
      // While the model's searches are being built (warm "warming": projection and completion
      // would wait for it), ask /api/model every WARM_POLL_MS until they are ready; never otherwise.
      clearTimeout(this.warmTimer);
      if (!this.info || this.info.warm !== "warming") return;
      const id = this.modelId;
      this.warmTimer = setTimeout(async () => {
        try {
          const info = await api("/api/model?id=" + encodeURIComponent(id));
          if (id !== this.modelId) return;  // another model was picked meanwhile
          this.info.warm = info.warm;
        } catch (e) { /* the server is down: the edits say so; ask again later */ }
        this.followWarmUp();
      }, WARM_POLL_MS);
    },
    async pickModel(event) {
      try { await this.loadModel(event.target.value); } catch (e) { this.fail(e); }
    },
    savedKey() { return "facegan-studio-saved:" + this.modelId; },
    describe(m) {
      const fid = m.fid == null ? "not evaluated" : "FID " + m.fid.toFixed(1);
      return `${m.variant} · ${m.dataset || "?"} · ${m.steps} steps · ${fid}`;
    },

    // ---- state, history, rendering --------------------------------------------------------
    snapshot() { return clone({ z: this.z, c: this.c, offsets: this.offsets, locks: this.locks }); },
    restore(state) {
      this.z = state.z.map(Math.fround); this.c = clone(state.c || {});
      this.offsets = { ...Object.fromEntries(this.directions.map((d) => [d.name, 0])), ...(state.offsets || {}) };
      this.locks = (state.locks || []).filter((n) => n in this.offsets);
      this.changed();
    },
    remember() {   // before a change: the current state goes on the undo stack
      this.history.push(this.snapshot());
      if (this.history.length > 200) this.history.shift();
      this.future = [];
    },
    beginEdit(key) {  // one undo step per stroke / per burst of keys on one cell or slider
      const now = performance.now();
      if (key !== this.lastKey || now - (this.lastEditAt || 0) > 1000) this.remember();
      this.lastKey = key; this.lastEditAt = now;
    },
    undo() {
      if (!this.history.length) return;
      this.future.push(this.snapshot());
      this.restore(this.history.pop());
      this.lastKey = null;
    },
    redo() {
      if (!this.future.length) return;
      this.history.push(this.snapshot());
      this.restore(this.future.pop());
      this.lastKey = null;
    },
    reset() {
      if (!this.base) return;
      this.remember();
      this.restore(this.base);
    },
    changed() {
      this.wanted += 1;
      this.zText = this.z.map((v) => round(v, 6)).join(", ");
      clearTimeout(this.timer);
      this.timer = setTimeout(this.render, DEBOUNCE_MS);
    },
    body(extra = {}) {
      const offsets = Object.fromEntries(Object.entries(this.offsets).filter(([, v]) => v !== 0));
      return { model: this.modelId, z: this.z, c: this.c, offsets, locks: this.locks, ...extra };
    },
    async render() {
      // One request in flight per page; the newest state is sent when it returns.
      if (this.inFlight) { this.dirty = true; return; }
      this.inFlight = true; this.dirty = false;
      const version = this.wanted;
      try {
        const response = await api("/api/generate", this.body(), { raw: true });
        const blob = await response.blob();
        if (this.imageUrl) URL.revokeObjectURL(this.imageUrl);
        this.imageBlob = blob;
        this.imageUrl = URL.createObjectURL(blob);
        this.shown = version;
        this.error = ""; this.down = false;
        history.replaceState(null, "", "#" + this.hashOf());
      } catch (e) {
        this.fail(e);
      } finally {
        this.inFlight = false;
        if (this.dirty || this.shown !== this.wanted && !this.down && !this.error) this.render();
      }
    },
    fail(e) {
      this.error = e.message || String(e);
      if (e.status === 0 && !this.down) {
        this.down = true;
        this.watchHealth();
      }
    },
    async watchHealth() {
      while (this.down) {
        await new Promise((r) => setTimeout(r, HEALTH_EVERY_MS));
        try {
          await api("/api/health");
          this.down = false; this.error = "";
          this.notice = "The server is back.";
          if (this.info) this.render(); else location.reload();
        } catch (e) { /* still down */ }
      }
    },
    async random() {
      try {
        const r = await api("/api/random", { model: this.modelId });
        if (this.z.length) this.remember();
        this.seed = r.seed;
        this.z = r.z.map(Math.fround); this.c = r.c;
        this.offsets = Object.fromEntries(this.directions.map((d) => [d.name, 0]));
        this.base = { z: r.z.slice(), c: clone(r.c), offsets: { ...this.offsets }, locks: [] };
        this.changed();
      } catch (e) { this.fail(e); }
    },

    // ---- the z grid ---------------------------------------------------------------------
    gray(v) {
      const [lo, hi] = this.range;
      const g = Math.round(255 * Math.min(Math.max((v - lo) / (hi - lo), 0), 1));
      return `rgb(${g}, ${g}, ${g})`;
    },
    setCell(i, value) {
      const [lo, hi] = this.range;
      this.z[i] = Math.fround(round(Math.min(Math.max(value, lo), hi), 6));
      this.changed();
    },
    step(i, amount) { this.setCell(i, this.z[i] + amount * (this.range[1] - this.range[0])); },
    paintStart(event) {
      const cell = event.target.closest(".cell");
      if (!cell) return;
      event.preventDefault();
      if (event.pointerType === "mouse") this.direction = event.button === 2 ? -1 : 1;
      else this.direction = this.touchDirection;
      if (cell.hasPointerCapture && cell.hasPointerCapture(event.pointerId)) cell.releasePointerCapture(event.pointerId);
      this.painting = true; this.lastCell = -1; this.lastPoint = null;
      this.remember();
      this.lastKey = null;
      this.paintAt(event);
    },
    paintAt(event) {
      if (!this.painting) return;
      // Sample the segment since the last event every 4 px: a fast drag skips no cell.
      const [x0, y0] = this.lastPoint || [event.clientX, event.clientY];
      const n = Math.max(1, Math.ceil(Math.hypot(event.clientX - x0, event.clientY - y0) / 4));
      for (let k = 1; k <= n; k++) {
        const el = document.elementFromPoint(x0 + (event.clientX - x0) * k / n, y0 + (event.clientY - y0) * k / n);
        const cell = el && el.closest && el.closest(".zgrid .cell");
        if (!cell || Number(cell.dataset.index) === this.lastCell) continue;
        const i = Number(cell.dataset.index);
        this.lastCell = i; this.focused = i;
        this.step(i, this.direction * this.brush / 2);
      }
      this.lastPoint = [event.clientX, event.clientY];
    },
    paintEnd() { this.painting = false; },
    wheel(event, i) {
      this.focused = i;
      this.beginEdit("cell" + i);
      this.step(i, event.deltaY < 0 ? FINE : -FINE);
    },
    cellKey(event, i) {
      const moves = { ArrowLeft: -1, ArrowRight: 1, Home: -i, End: this.z.length - 1 - i };
      let target = null;
      if (event.key in moves) target = i + moves[event.key];
      else if (event.shiftKey && event.key === "ArrowUp") target = i - this.cols;
      else if (event.shiftKey && event.key === "ArrowDown") target = i + this.cols;
      if (target !== null) {
        event.preventDefault();
        this.focusCell(Math.min(Math.max(target, 0), this.z.length - 1));
        return;
      }
      const steps = { ArrowUp: FINE, ArrowDown: -FINE, PageUp: this.brush / 2, PageDown: -this.brush / 2 };
      if (event.key in steps) {
        event.preventDefault();
        this.beginEdit("cell" + i);
        this.step(i, steps[event.key]);
      } else if (event.key === "0" || event.key === "Delete") {
        event.preventDefault();
        this.beginEdit("cell" + i);
        this.setCell(i, (this.range[0] + this.range[1]) / 2);
      }
    },
    focusCell(i) {
      this.focused = i;
      nextTick(() => this.$refs.grid.children[i].focus());
    },
    globalKey(event) {
      const typing = ["INPUT", "TEXTAREA", "SELECT"].includes(document.activeElement?.tagName);
      if (typing || !(event.ctrlKey || event.metaKey)) return;
      const key = event.key.toLowerCase();
      if (key === "z" && !event.shiftKey) { event.preventDefault(); this.undo(); }
      else if (key === "y" || (key === "z" && event.shiftKey)) { event.preventDefault(); this.redo(); }
    },

    // ---- extra inputs and attribute directions ---------------------------------------------
    setC(name, k, value) {
      this.beginEdit("c:" + name + k);
      const v = (this.c[name] || []).slice();
      v[k] = Number(value);
      this.c = { ...this.c, [name]: v };
      this.changed();
    },
    setClass(name, k) {
      const spec = this.extraInputs.find((s) => s.name === name);
      this.remember();
      this.c = { ...this.c, [name]: Array.from({ length: spec.size }, (_, j) => (j === k ? 1 : 0)) };
      this.changed();
    },
    setOffset(name, value) {
      this.beginEdit("o:" + name);
      this.offsets = { ...this.offsets, [name]: Number(value) };
      this.changed();
    },
    toggleLock(name) {
      this.remember();
      this.locks = this.locks.includes(name) ? this.locks.filter((n) => n !== name) : [...this.locks, name];
      this.changed();
    },
    resetSliders() {
      this.remember();
      this.offsets = Object.fromEntries(this.directions.map((d) => [d.name, 0]));
      this.locks = [];
      this.changed();
    },

    // ---- z as text, share link, download ------------------------------------------------
    async copy(text, what) {
      try {
        await navigator.clipboard.writeText(text);
        this.notice = `${what} copied to the clipboard.`;
      } catch (e) {
        this.notice = `Copy failed (${e.message}): select the text and copy it by hand.`;
      }
    },
    applyPaste() {
      const parts = this.pasteText.split(/[\s,;\[\]]+/).filter(Boolean);
      const values = parts.map(Number);
      if (values.length !== this.z.length || values.some((v) => !Number.isFinite(v))) {
        const bad = parts.find((p) => !Number.isFinite(Number(p)));
        this.pasteError = bad !== undefined ? `"${bad.slice(0, 20)}" is not a number.`
          : `Expected ${this.z.length} numbers, got ${values.length}.`;
        return;
      }
      this.pasteError = "";
      this.remember();
      this.seed = null;  // no longer the face of a seed
      const [lo, hi] = this.range;
      this.z = values.map((v) => Math.fround(Math.min(Math.max(v, lo), hi)));
      this.changed();
    },
    hashOf() {
      const p = new URLSearchParams();
      p.set("m", this.modelId || "");
      p.set("z", b64urlFromFloats(this.z));
      for (const [name, v] of Object.entries(this.c)) p.set("c." + name, b64urlFromFloats(v));
      const moved = Object.entries(this.offsets).filter(([, v]) => v !== 0);
      if (moved.length) p.set("o", moved.map(([n, v]) => `${n}:${v}`).join(","));
      if (this.locks.length) p.set("l", this.locks.join(","));
      return p.toString();
    },
    fromHash() {   // a share link: returns true when it set the state
      const p = new URLSearchParams(location.hash.slice(1));
      if (!p.get("z") || !this.info) return false;
      if (p.get("m") && p.get("m") !== this.modelId) {
        if (this.models.some((m) => m.id === p.get("m"))) this.loadModel(p.get("m"), { fromHash: true });
        return false;
      }
      try {
        const z = floatsFromB64url(p.get("z"));
        if (z.length !== this.info.z.size) throw new Error(`z has ${z.length} values, the model takes ${this.info.z.size}`);
        const c = {};
        for (const spec of this.extraInputs) if (p.get("c." + spec.name)) c[spec.name] = floatsFromB64url(p.get("c." + spec.name));
        const offsets = {};
        for (const item of (p.get("o") || "").split(",").filter(Boolean)) {
          const [n, v] = item.split(":");
          if (this.directions.some((d) => d.name === n) && Number.isFinite(Number(v))) offsets[n] = Number(v);
        }
        const locks = (p.get("l") || "").split(",").filter((n) => this.directions.some((d) => d.name === n));
        if (this.z.length) this.remember();
        this.restore({ z, c, offsets, locks });
        return true;
      } catch (e) {
        this.error = "This link's face could not be read: " + e.message;
        return false;
      }
    },
    async download(scale) {
      try {
        const blob = scale === 1 && this.shown === this.wanted && this.imageBlob ? this.imageBlob
          : await (await api("/api/generate", this.body({ scale }), { raw: true })).blob();
        const url = URL.createObjectURL(blob);
        const a = document.createElement("a");
        const size = this.info.card.resolution * scale;
        a.href = url; a.download = `face-${this.seed ?? "edit"}-${size}px.png`;
        document.body.appendChild(a); a.click(); a.remove();
        setTimeout(() => URL.revokeObjectURL(url), 10000);
      } catch (e) { this.fail(e); }
    },

    // ---- saved faces and interpolation ----------------------------------------------------
    async save() {
      if (!this.imageBlob) return;
      const thumb = await blobToDataUrl(this.imageBlob);
      this.saved.push({ state: this.snapshot(), thumb, seed: this.seed });
      this.persist();
      if (this.saved.length === 2) this.interpB = 1;
      this.notice = `Saved as face ${this.saved.length}.`;
    },
    open(k) { this.remember(); this.restore(this.saved[k].state); },
    unsave(k) {
      this.saved.splice(k, 1);
      this.persist();
      this.interpA = Math.min(this.interpA, Math.max(this.saved.length - 1, 0));
      this.interpB = Math.min(this.interpB, Math.max(this.saved.length - 1, 0));
    },
    persist() {
      try { localStorage.setItem(this.savedKey(), JSON.stringify(this.saved)); }
      catch (e) { this.notice = "The saved faces could not be stored in this browser: " + e.message; }
    },
    async interpolate() {
      const [a, b] = [this.saved[this.interpA], this.saved[this.interpB]];
      if (!a || !b) return;
      this.interpBusy = true;
      try {
        const r = await api("/api/interpolate", { model: this.modelId, a: a.state, b: b.state, steps: Number(this.interpSteps) });
        this.frames = r.frames;
      } catch (e) { this.fail(e); } finally { this.interpBusy = false; }
    },
    openFrame(frame) {
      this.remember();
      this.seed = null;
      this.restore({ z: frame.z, c: frame.c, offsets: {}, locks: [] });
    },

    // ---- photo: align, project, complete -------------------------------------------------
    async alignPhoto(event) {
      const file = event.target.files[0];
      if (!file) return;
      Object.assign(this.upload, { busy: true, error: "", faces: [], chosen: 0 });
      this.project.result = null; this.complete.result = null;
      const form = new FormData();
      form.append("photo", file);
      try {
        const r = await fetch("/api/align?model=" + encodeURIComponent(this.modelId), { method: "POST", body: form })
          .catch(() => { throw new ApiError(0, "The studio server is unreachable."); });
        const data = await r.json().catch(() => ({}));
        if (!r.ok) throw new ApiError(r.status, `Request failed (${r.status}): ${data.error || r.statusText}`);
        this.upload.faces = data.faces;
        await nextTick();
        this.clearMask();
      } catch (e) {
        this.upload.error = e.message;
      } finally { this.upload.busy = false; }
    },
    async projectFace() {
      const face = this.upload.faces[this.upload.chosen];
      if (!face) return;
      this.project.busy = true; this.project.job = null; this.upload.error = "";
      try {
        const result = await this.runJob("/api/project", { model: this.modelId, image: face.image }, this.project);
        if (!result) { this.notice = "The search was cancelled."; return; }
        this.project.result = result;
        this.remember();
        this.restore({ z: result.z, c: result.c, offsets: {}, locks: [] });
      } catch (e) { this.upload.error = e.message; } finally { this.project.busy = false; }
    },
    // ---- heavy work as jobs: queued on the server, followed here, cancellable ---------------
    async runJob(path, body, panel) {
      // The server answers 202 with the job at once; its progress is polled until it is over.
      // Returns the result, or null when the job was cancelled. Work that needs no job (a
      // completion by the trained completion network: milliseconds) is answered at once (200).
      const answer = await api(path + "?wait=false", body);
      if (answer.state === undefined) return answer;
      panel.job = answer;
      for (;;) {
        if (panel.job.state === "done") return panel.job.result;
        if (panel.job.state === "cancelled") return null;
        if (panel.job.state === "failed") {
          throw new ApiError(panel.job.status, `Request failed (${panel.job.status}): ${panel.job.error}`);
        }
        await sleep(JOB_POLL_MS);
        panel.job = await api("/api/jobs/" + panel.job.id);
      }
    },
    async cancelJob(panel) {
      if (!panel.job) return;
      try { panel.job = await api("/api/jobs/" + panel.job.id, undefined, { method: "DELETE" }); }
      catch (e) { this.upload.error = e.message; }
    },
    jobText(panel, verb) {
      const job = panel.job;
      if (!job) return verb + "…";
      if (job.cancelling) return "Cancelling…";
      if (job.state === "queued") return `Waiting for the server (${job.position ? job.position + " job(s) ahead" : "next"})…`;
      return `${verb}… ${Math.round(100 * job.progress)}%`;
    },
    abandonJobs() {  // the page is going away: its running jobs are of no use any more
      for (const panel of [this.project, this.complete]) {
        if (panel.busy && panel.job) {
          fetch("/api/jobs/" + panel.job.id, { method: "DELETE", keepalive: true, headers: { "X-Client-Id": CLIENT_ID } });
        }
      }
    },
    chooseFace(k) { this.upload.chosen = k; nextTick(this.clearMask); },
    clearMask() { this.drawMask(false); },
    drawMask(keep) {
      // The chosen face on the canvas, with the mask painted so far when `keep` (the canvas is
      // made anew each time the Complete tab is shown), else with an empty mask.
      const canvas = this.$refs.mask;
      if (!canvas) return;
      const size = this.info.card.resolution;
      canvas.width = size; canvas.height = size;
      const ctx = canvas.getContext("2d");
      const img = new Image();
      img.onload = () => {
        ctx.drawImage(img, 0, 0);
        if (!keep || !this.maskPixels || this.maskPixels.length !== size * size) {
          this.maskPixels = new Uint8Array(size * size);
          return;
        }
        ctx.fillStyle = "rgba(255, 0, 160, 0.85)";
        this.maskPixels.forEach((v, i) => { if (v) ctx.fillRect(i % size, Math.floor(i / size), 1, 1); });
      };
      img.src = this.upload.faces[this.upload.chosen].image;
    },
    maskDraw(event) {
      if (event.type === "pointerdown") { this.complete.drawing = true; event.target.setPointerCapture(event.pointerId); }
      if (!this.complete.drawing) return;
      const canvas = this.$refs.mask;
      const rect = canvas.getBoundingClientRect();
      const size = canvas.width;
      const x = Math.floor((event.clientX - rect.left) / rect.width * size);
      const y = Math.floor((event.clientY - rect.top) / rect.height * size);
      const r = Math.max(2, Math.round(size / 16));
      const ctx = canvas.getContext("2d");
      ctx.fillStyle = "rgba(255, 0, 160, 0.85)";
      for (let dy = -r; dy <= r; dy++) for (let dx = -r; dx <= r; dx++) {
        const px = x + dx, py = y + dy;
        if (px < 0 || py < 0 || px >= size || py >= size || dx * dx + dy * dy > r * r) continue;
        this.maskPixels[py * size + px] = 1;
        ctx.fillRect(px, py, 1, 1);
      }
    },
    maskEnd() { this.complete.drawing = false; },
    maskLowerHalf() {   // keyboard-reachable mask: the lower half of the face
      this.clearMask();
      setTimeout(() => {
        const size = this.info.card.resolution;
        const ctx = this.$refs.mask.getContext("2d");
        ctx.fillStyle = "rgba(255, 0, 160, 0.85)";
        ctx.fillRect(0, size / 2, size, size / 2);
        this.maskPixels.fill(1, (size / 2) * size);
      }, 50);
    },
    async completeFace() {
      const face = this.upload.faces[this.upload.chosen];
      if (!face || !this.maskPixels || !this.maskPixels.some((v) => v)) {
        this.upload.error = "Draw the part to complete on the face first.";
        return;
      }
      const size = this.info.card.resolution;
      const canvas = document.createElement("canvas");
      canvas.width = size; canvas.height = size;
      const ctx = canvas.getContext("2d");
      const data = ctx.createImageData(size, size);
      this.maskPixels.forEach((v, i) => { data.data.fill(v ? 255 : 0, 4 * i, 4 * i + 3); data.data[4 * i + 3] = 255; });
      ctx.putImageData(data, 0, 0);
      this.complete.busy = true; this.complete.job = null; this.upload.error = "";
      try {
        const body = { model: this.modelId, image: face.image, mask: canvas.toDataURL("image/png") };
        const result = await this.runJob("/api/complete", body, this.complete);
        if (result) this.complete.result = result; else this.notice = "The completion was cancelled.";
      } catch (e) { this.upload.error = e.message; } finally { this.complete.busy = false; }
    },
    methodText(result) {
      if (result.method !== "net") return "Completed by the latent search: the generator's z that best fits the face around the hole.";
      const n = result.network || {};
      return `Completed by the completion network (trained ${n.steps} step${n.steps === 1 ? "" : "s"} on ${n.dataset || "?"} records `
        + `${n.version || "?"}); it paints pixels, so there is no z to edit.`;
    },
    useCompleted() {
      const r = this.complete.result;
      this.remember();
      this.restore({ z: r.z, c: r.c, offsets: {}, locks: [] });
      this.tab = "edit";
    },
  },
  template: `
  <header>
    <h1>Face studio</h1>
    <label>Model
      <select :value="modelId" @change="pickModel" aria-label="Model">
        <option v-for="m in models" :key="m.id" :value="m.id">{{ m.id }} — {{ describe(m) }}</option>
      </select>
    </label>
    <span class="card-facts" v-if="current">{{ describe(current) }}<template v-if="info"> · {{ info.card.resolution }}×{{ info.card.resolution }} · z {{ info.z.size }} ({{ info.z.distribution }})</template></span>
    <span class="warm" role="status" v-if="info && info.warm === 'warming'" id="warm" title="Completion and projection are being prepared; editing works now">warming up…</span>
  </header>
  <div class="message error" role="alert" v-if="error" id="error">{{ error }}<template v-if="down"> Retrying every few seconds…</template></div>
  <div class="message info" role="status" aria-live="polite" v-if="notice" id="notice">{{ notice }}</div>

  <nav class="tabs" role="tablist" aria-label="Panels" v-if="info">
    <button role="tab" :aria-selected="tab === 'edit'" @click="tab = 'edit'" id="tab-edit">Edit</button>
    <button role="tab" :aria-selected="tab === 'interpolate'" @click="tab = 'interpolate'" id="tab-interpolate">Interpolate</button>
    <button role="tab" v-if="features.complete" :aria-selected="tab === 'complete'" @click="tab = 'complete'" id="tab-complete">Complete a photo</button>
    <button role="tab" v-if="features.project" :aria-selected="tab === 'photo'" @click="tab = 'photo'" id="tab-photo">Start from my photo</button>
  </nav>

  <div class="layout" v-if="info">
    <section>
      <figure class="face panel" :class="{ pixelated }" id="face" :data-wanted="wanted" :data-shown="shown" :aria-busy="shown !== wanted">
        <img :src="imageUrl" :alt="'Generated face' + (seed != null ? ', seed ' + seed : '')" id="face-image" v-if="imageUrl">
        <figcaption>{{ info.card.resolution }}×{{ info.card.resolution }} from {{ modelId }}<template v-if="seed != null">, seed {{ seed }}</template>
          <label><input type="checkbox" v-model="pixelated"> show pixels</label></figcaption>
      </figure>
      <div class="toolbar">
        <button class="primary" @click="random" id="random">Random</button>
        <button @click="reset" :disabled="!base" id="reset">Reset</button>
        <button @click="undo" :disabled="!history.length" id="undo" title="Ctrl+Z">Undo</button>
        <button @click="redo" :disabled="!future.length" id="redo" title="Ctrl+Y or Ctrl+Shift+Z">Redo</button>
        <button @click="save" :disabled="!imageBlob" id="save">Save face</button>
        <button @click="download(1)" :disabled="!imageBlob" id="download">Download PNG ({{ info.card.resolution }}px)</button>
        <button @click="download(4)" :disabled="!imageBlob" id="download-large">Download PNG ({{ info.card.resolution * 4 }}px)</button>
        <button @click="copy(shareUrl, 'Share link')" id="share">Copy share link</button>
      </div>
      <section class="panel" aria-labelledby="saved-title">
        <h2 id="saved-title">Saved faces</h2>
        <p class="help" v-if="!saved.length">Save a face to come back to it, or to interpolate between two.</p>
        <div class="strip" id="saved">
          <figure v-for="(s, k) in saved" :key="k">
            <button class="thumb" @click="open(k)" :aria-label="'Open saved face ' + (k + 1)"><img :src="s.thumb" alt=""></button>
            <button class="remove" @click="unsave(k)" :aria-label="'Remove saved face ' + (k + 1)">×</button>
          </figure>
        </div>
      </section>
    </section>

    <section v-show="tab === 'edit'">
      <section class="panel" aria-labelledby="z-title">
        <h2 id="z-title">z: {{ z.length }} values as a {{ cols }}×{{ Math.ceil(z.length / cols) }} grid</h2>
        <div class="legend" id="legend">
          <span>{{ range[0] }} = black</span><span class="ramp" aria-hidden="true"></span><span>{{ range[1] }} = white</span>
          <span>(gray level linear in the value; z is {{ info.z.distribution }}<template v-if="info.z.distribution === 'uniform'"> on [{{ range[0] }}, {{ range[1] }}]</template><template v-else>, clipped to [{{ range[0] }}, {{ range[1] }}]</template>)</span>
        </div>
        <div class="zgrid" ref="grid" role="group" aria-label="z values; arrow keys edit, see the help below"
             :style="{ gridTemplateColumns: 'repeat(' + cols + ', 1fr)' }"
             @pointerdown="paintStart" @pointermove="paintAt" @contextmenu.prevent>
          <div v-for="(v, i) in z" :key="i" class="cell" role="slider" :data-index="i"
               :tabindex="i === focused ? 0 : -1" :aria-label="'z[' + i + ']'"
               :aria-valuemin="range[0]" :aria-valuemax="range[1]" :aria-valuenow="v"
               :style="{ background: gray(v) }" :title="'z[' + i + '] = ' + v.toFixed(3)"
               @wheel.prevent="wheel($event, i)" @keydown="cellKey($event, i)" @focus="focused = i"></div>
        </div>
        <div class="row">
          <label>Brush strength <input type="range" min="0.05" max="1" step="0.05" v-model.number="brush" id="brush"> {{ brush.toFixed(2) }}</label>
          <span class="help">(touch paints</span>
          <label><input type="radio" :value="1" v-model.number="touchDirection"> lighter</label>
          <label><input type="radio" :value="-1" v-model.number="touchDirection"> darker)</label>
        </div>
        <p class="help">Click or drag to paint: left button lighter, right button darker. On a focused cell:
          ↑/↓ or the wheel fine steps, PageUp/PageDown brush steps, 0 sets it to the middle; ←/→ previous/next cell,
          Shift+↑/↓ the cell above/below, Home/End first/last. Ctrl+Z / Ctrl+Y undo and redo.</p>
      </section>

      <section class="panel" v-if="extraInputs.length" aria-labelledby="c-title">
        <h2 id="c-title">Inputs c</h2>
        <template v-for="spec in extraInputs" :key="spec.name">
          <div v-if="spec.kind === 'onehot'" class="row" role="radiogroup" :aria-label="spec.name">
            <span>{{ spec.name }}</span>
            <label v-for="(label, k) in (spec.labels || [...Array(spec.size).keys()])" :key="k">
              <input type="radio" :name="'c-' + spec.name" :checked="(c[spec.name] || [])[k] === 1" @change="setClass(spec.name, k)"> {{ label }}
            </label>
          </div>
          <template v-else>
            <div class="slider" v-for="k in spec.size" :key="spec.name + k">
              <label :for="'c-' + spec.name + '-' + k">{{ (spec.labels && spec.labels[k - 1]) || spec.name + '[' + (k - 1) + ']' }}</label>
              <input type="range" :id="'c-' + spec.name + '-' + k" :min="spec.range[0]" :max="spec.range[1]" step="0.01"
                     :value="(c[spec.name] || [])[k - 1] ?? 0" @input="setC(spec.name, k - 1, $event.target.value)">
              <output>{{ Number((c[spec.name] || [])[k - 1] ?? 0).toFixed(2) }}</output><span></span>
            </div>
          </template>
        </template>
      </section>

      <section class="panel" aria-labelledby="dir-title" id="directions">
        <h2 id="dir-title">Attributes</h2>
        <p class="help" v-if="!directions.length">This model has no attribute directions yet (run
          <code>luigi --module tasks FitAttributeDirections --run-dir &lt;run folder&gt;</code>).</p>
        <template v-else>
          <div class="slider" v-for="d in directions" :key="d.name">
            <label :for="'dir-' + d.name">{{ d.name.replace(/_/g, ' ') }}</label>
            <input type="range" :id="'dir-' + d.name" :min="info.offset_range[0]" :max="info.offset_range[1]" step="0.1"
                   :value="offsets[d.name] || 0" @input="setOffset(d.name, $event.target.value)"
                   :aria-describedby="'dir-note-' + d.name">
            <output>{{ (offsets[d.name] || 0).toFixed(1) }}</output>
            <label><input type="checkbox" :checked="locks.includes(d.name)" @change="toggleLock(d.name)" :id="'lock-' + d.name"> lock</label>
            <span class="note" :id="'dir-note-' + d.name">held-out accuracy {{ (d.accuracy * 100).toFixed(0) }}% (chance {{ (d.chance * 100).toFixed(0) }}%)</span>
          </div>
          <div class="row"><button @click="resetSliders" id="reset-sliders">Reset sliders</button>
            <span class="help">Offsets are in standard deviations of z along each direction; a locked attribute stays put while the others move.</span></div>
          <details v-if="info.dropped.length"><summary>{{ info.dropped.length }} attribute(s) dropped</summary>
            <ul><li v-for="d in info.dropped" :key="d.name">{{ d.name }}: {{ d.reason }}</li></ul></details>
        </template>
      </section>

      <section class="panel" aria-labelledby="text-title">
        <h2 id="text-title">z as text</h2>
        <label for="z-text" class="sr-only">Current z</label>
        <textarea id="z-text" readonly :value="zText"></textarea>
        <div class="row"><button @click="copy(zText, 'z')" id="copy-z">Copy z</button></div>
        <label for="paste-z">Paste z ({{ z.length }} numbers, separated by commas or spaces)</label>
        <textarea id="paste-z" v-model="pasteText"></textarea>
        <div class="row"><button @click="applyPaste" id="apply-z">Use pasted z</button>
          <span class="message error" v-if="pasteError" role="alert">{{ pasteError }}</span></div>
      </section>
    </section>

    <section v-show="tab === 'interpolate'" class="panel" aria-labelledby="interp-title">
      <h2 id="interp-title">Interpolate between two saved faces</h2>
      <p class="help" v-if="saved.length < 2">Save at least two faces first (button “Save face”).</p>
      <template v-else>
        <div class="row">
          <label>From <select v-model.number="interpA" id="interp-a"><option v-for="(s, k) in saved" :value="k">face {{ k + 1 }}</option></select></label>
          <label>to <select v-model.number="interpB" id="interp-b"><option v-for="(s, k) in saved" :value="k">face {{ k + 1 }}</option></select></label>
          <label>steps <input type="number" min="2" :max="info.limits.max_interpolation_steps" v-model.number="interpSteps" style="width: 4em"></label>
          <button class="primary" @click="interpolate" :disabled="interpBusy" id="interpolate">Interpolate</button>
        </div>
        <p class="help">Spherical interpolation of z (the prior's typical norm is kept), linear in c. Click a frame to edit it.</p>
        <div class="frames" id="frames">
          <button v-for="(f, k) in frames" :key="k" @click="openFrame(f)" :aria-label="'Edit frame at t = ' + f.t"><img :src="f.image" alt=""></button>
        </div>
      </template>
    </section>

    <section v-if="tab === 'complete' || tab === 'photo'" class="panel" aria-labelledby="photo-title">
      <h2 id="photo-title">{{ tab === 'complete' ? 'Complete a photo' : 'Start from my photo' }}</h2>
      <label>Photo with a face <input type="file" accept="image/*" @change="alignPhoto" id="photo"></label>
      <p class="help">The face is found and aligned as the training faces were; nothing leaves this machine.</p>
      <p v-if="upload.busy">Finding the face…</p>
      <div class="message error" role="alert" v-if="upload.error">{{ upload.error }}</div>
      <div class="row" v-if="upload.faces.length > 1">
        <button v-for="(f, k) in upload.faces" :key="k" @click="chooseFace(k)" :aria-pressed="upload.chosen === k"><img :src="f.image" width="48" height="48" :alt="'Face ' + (k + 1)"></button>
      </div>
      <template v-if="upload.faces.length && tab === 'complete'">
        <p class="help">Paint the part to fill in, then Complete.</p>
        <canvas class="mask" ref="mask" @pointerdown="maskDraw" @pointermove="maskDraw" @pointerup="maskEnd" aria-label="Aligned face: paint the missing part"></canvas>
        <div class="row">
          <button @click="maskLowerHalf">Mask the lower half</button><button @click="clearMask">Clear mask</button>
          <button class="primary" @click="completeFace" :disabled="complete.busy" id="complete">{{ complete.busy ? 'Completing…' : 'Complete' }}</button>
        </div>
        <div class="row job" v-if="complete.busy" role="status" aria-live="polite" id="complete-job">
          <progress :value="complete.job ? complete.job.progress : 0" max="1" aria-label="Completion progress"></progress>
          <span>{{ jobText(complete, 'Completing') }}</span>
          <button @click="cancelJob(complete)" :disabled="!complete.job || complete.job.cancelling" id="cancel-complete">Cancel</button>
        </div>
        <div class="results" v-if="complete.result">
          <figure><img :src="complete.result.completed" alt="Completed face"><figcaption>{{ complete.result.method === 'net' ? 'painted' : 'generated' }}</figcaption></figure>
          <figure><img :src="complete.result.blended" alt="Blended face"><figcaption>blended into the photo</figcaption></figure>
          <button @click="useCompleted" v-if="complete.result.z">Edit this face</button>
        </div>
        <p class="help" v-if="complete.result" id="complete-method">{{ methodText(complete.result) }}</p>
        <ul class="flags" v-if="complete.result && complete.result.flags.length" role="status" id="complete-flags">
          <li v-for="(f, k) in complete.result.flags" :key="k">Check this result: {{ f }}</li>
        </ul>
      </template>
      <template v-if="upload.faces.length && tab === 'photo'">
        <div class="results"><figure><img :src="upload.faces[upload.chosen].image" alt="Aligned face from the photo"><figcaption>aligned</figcaption></figure>
          <figure v-if="project.result"><img :src="project.result.image" alt="Closest generated face"><figcaption>closest face (PSNR {{ project.result.psnr }}, SSIM {{ project.result.ssim }})</figcaption></figure></div>
        <button class="primary" @click="projectFace" :disabled="project.busy" id="project">{{ project.busy ? 'Searching z…' : 'Find its z' }}</button>
        <div class="row job" v-if="project.busy" role="status" aria-live="polite" id="project-job">
          <progress :value="project.job ? project.job.progress : 0" max="1" aria-label="Search progress"></progress>
          <span>{{ jobText(project, 'Searching z') }}</span>
          <button @click="cancelJob(project)" :disabled="!project.job || project.job.cancelling" id="cancel-project">Cancel</button>
        </div>
      </template>
    </section>
  </div>
  <footer class="help" v-if="info">
    <dl class="facts" id="card">
      <dt>variant</dt><dd>{{ info.card.variant }} (generator {{ info.card.generator }}, discriminator {{ info.card.discriminator }})</dd>
      <dt>data set</dt><dd>{{ info.card.dataset.name || '?' }} {{ info.card.dataset.version || '' }}</dd>
      <dt>steps</dt><dd>{{ info.card.steps }} ({{ info.card.precision }})</dd>
      <dt>evaluation</dt><dd>{{ info.evaluation && info.evaluation.fid != null ? 'FID ' + info.evaluation.fid.toFixed(1) + ', KID ' + (info.evaluation.kid ?? '?') : 'not evaluated' }}</dd>
    </dl>
  </footer>
  `,
};

createApp(App).mount("#app");
