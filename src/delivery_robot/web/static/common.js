// Shared by the tablet pages: language, API calls, live events, idle timeout, dialogs.
// Plain ES2020, no build step. Everything hangs off window.DR.
"use strict";
(function () {
  const DR = (window.DR = window.DR || {});
  const root = document.documentElement;
  const LANGS = ["ko", "en"];

  DR.config = {
    page: root.dataset.page,
    defaultLang: root.dataset.defaultLang,
    idleTimeoutS: Number(root.dataset.idleTimeoutS) || 900,
    idleWarningS: Number(root.dataset.idleWarningS) || 60,
  };

  // ---- language ------------------------------------------------------------------------
  const savedLang = localStorage.getItem("dr.lang");
  DR.lang = LANGS.includes(savedLang) ? savedLang
    : LANGS.includes(DR.config.defaultLang) ? DR.config.defaultLang : "ko";
  const langListeners = [];

  DR.t = function (key, params) {
    const table = DR.messages[DR.lang] || {};
    let text = key in table ? table[key] : (DR.messages.en[key] !== undefined ? DR.messages.en[key] : key);
    if (params) {
      for (const [name, value] of Object.entries(params)) {
        text = text.split("{" + name + "}").join(String(value));
      }
    }
    return text;
  };
  DR.has = (key) => key in (DR.messages[DR.lang] || {}) || key in DR.messages.en;

  DR.applyI18n = function (scope) {
    for (const el of (scope || document).querySelectorAll("[data-i18n]")) {
      el.textContent = DR.t(el.dataset.i18n);
    }
    for (const el of (scope || document).querySelectorAll("[data-i18n-attr]")) {
      for (const pair of el.dataset.i18nAttr.split(";")) {
        const [attr, key] = pair.split(":");
        if (attr && key) el.setAttribute(attr.trim(), DR.t(key.trim()));
      }
    }
  };

  DR.onLang = (fn) => langListeners.push(fn);

  DR.setLang = function (lang) {
    DR.lang = lang;
    localStorage.setItem("dr.lang", lang);
    root.lang = lang;
    DR.applyI18n(document);
    updateLangSwitch();
    for (const fn of langListeners) fn();
  };

  function updateLangSwitch() {
    const button = document.getElementById("lang-switch");
    if (!button) return;
    const other = DR.lang === "ko" ? "en" : "ko";
    button.textContent = other === "en" ? "English" : "한국어";
    button.lang = other;
    button.setAttribute("aria-label", other === "en" ? "Switch to English" : "한국어로 보기");
  }

  // ---- small helpers -------------------------------------------------------------------
  DR.$ = (id) => document.getElementById(id);
  DR.el = function (tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else if (key === "dataset") Object.assign(node.dataset, value);
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  };
  // Update a list in place: unchanged items keep their nodes (and a screen reader's focus);
  // a changed item that held the focus hands it to the same action in its new node.
  DR.renderList = function (list, items, keyOf, signatureOf, render) {
    const existing = new Map([...list.children].map((node) => [node.dataset.key, node]));
    const active = document.activeElement;
    let refocus = null;
    const nodes = items.map((item) => {
      const key = keyOf(item);
      const signature = signatureOf(item) + "|" + DR.lang;
      const old = existing.get(key);
      if (old && old.dataset.sig === signature) return old;
      const node = render(item);
      node.dataset.key = key;
      node.dataset.sig = signature;
      if (old && active && old.contains(active)) refocus = { node, action: active.dataset.action };
      return node;
    });
    nodes.forEach((node, i) => {
      if (list.children[i] !== node) list.insertBefore(node, list.children[i] || null);
    });
    while (list.children.length > nodes.length) list.lastElementChild.remove();
    if (refocus) {
      const target = (refocus.action && refocus.node.querySelector("[data-action='" + refocus.action + "']"))
        || refocus.node.querySelector("button") || null;
      if (target) target.focus();
      else { refocus.node.tabIndex = -1; refocus.node.focus(); }
    }
  };

  DR.announce = function (text) {
    const region = DR.$("announcer");
    if (!region) return;
    region.textContent = "";
    setTimeout(() => { region.textContent = text; }, 50);
  };
  DR.placeName = function (map, name) {
    const point = map && map.waypoints.find((w) => w.name === name);
    return (point && point.label) || String(name).replace(/_/g, " ");
  };
  DR.alertName = (kind) => (DR.has("alert." + kind) ? DR.t("alert." + kind) : String(kind).replace(/_/g, " "));
  DR.shortId = (orderId) => "#" + String(orderId).slice(-4);

  // ---- formatting ----------------------------------------------------------------------
  DR.fmtTime = function (epochS) {
    return new Intl.DateTimeFormat(DR.lang === "ko" ? "ko-KR" : "en-GB",
      { hour: "2-digit", minute: "2-digit", second: "2-digit" }).format(new Date(epochS * 1000));
  };
  DR.fmtDateTime = function (epochS) {
    return new Intl.DateTimeFormat(DR.lang === "ko" ? "ko-KR" : "en-GB",
      { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" })
      .format(new Date(epochS * 1000));
  };
  DR.fmtDuration = function (seconds) {
    if (seconds < 60) return DR.t("eta.under_minute");
    return DR.t("eta.minutes", { n: Math.round(seconds / 60) });
  };
  DR.fmtClock = function (seconds) {
    const s = Math.max(0, Math.ceil(seconds));
    return Math.floor(s / 60) + ":" + String(s % 60).padStart(2, "0");
  };

  // ---- API -----------------------------------------------------------------------------
  class ApiError extends Error {
    constructor(status, code, message, body) {
      super(message);
      this.status = status;
      this.code = code;
      this.body = body || {};
    }
  }
  DR.ApiError = ApiError;

  DR.api = async function (path, options) {
    const opts = options || {};
    const headers = Object.assign({ Accept: "application/json" }, opts.headers || {});
    if (opts.token) headers.Authorization = "Bearer " + opts.token;
    if (opts.body !== undefined) headers["Content-Type"] = "application/json";
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), opts.timeoutMs || 15000);
    let response;
    try {
      response = await fetch(path, {
        method: opts.method || "GET", headers, cache: "no-store", signal: controller.signal,
        body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
      });
    } catch (error) {
      throw new ApiError(0, "network", String(error));
    } finally {
      clearTimeout(timer);
    }
    let data = null;
    try { data = await response.json(); } catch (error) { data = null; }
    if (!response.ok) {
      throw new ApiError(response.status, (data && data.code) || "http_error",
        (data && data.message) || response.statusText, data);
    }
    return data;
  };

  // The message for an API error in the page's language (the server's English otherwise).
  DR.errorText = function (error, params) {
    const key = "error." + error.code;
    if (DR.has(key)) return DR.t(key, Object.assign({ message: error.message }, params || {}));
    return error.message || DR.t("error.unknown");
  };

  // ---- sign-in token (session by default, the tablet's storage if asked) --------------
  DR.tokens = {
    get(kind) {
      return sessionStorage.getItem("dr.token." + kind) || localStorage.getItem("dr.token." + kind);
    },
    set(kind, token, remember) {
      sessionStorage.setItem("dr.token." + kind, token);
      if (remember) localStorage.setItem("dr.token." + kind, token);
    },
    clear(kind) {
      sessionStorage.removeItem("dr.token." + kind);
      localStorage.removeItem("dr.token." + kind);
    },
    // A set-up link `/shop#token=...` signs the tablet in; the fragment never reaches a server.
    fromFragment(kind) {
      const match = /(?:^#|&)token=([^&]+)/.exec(location.hash);
      if (!match) return null;
      history.replaceState(null, "", location.pathname + location.search);
      const token = decodeURIComponent(match[1]);
      DR.tokens.set(kind, token, true);
      return token;
    },
  };

  // ---- live events over the websocket: reconnect with backoff, resync on every hello ----
  class Live {
    constructor(opts) {
      this.opts = opts;
      this.attempts = 0;
      this.stopped = false;
      this.ws = null;
      this.timer = null;
      this.onOnline = () => { if (!this.ws) this.connectSoon(0); };
      window.addEventListener("online", this.onOnline);
    }
    start() { this.stopped = false; this.connect(); }
    stop() {
      this.stopped = true;
      clearTimeout(this.timer);
      window.removeEventListener("online", this.onOnline);
      if (this.ws) { this.ws.onclose = null; this.ws.close(); this.ws = null; }
    }
    connect() {
      if (this.stopped) return;
      const scheme = location.protocol === "https:" ? "wss" : "ws";
      const ws = new WebSocket(scheme + "://" + location.host + "/api/v1/events");
      this.ws = ws;
      ws.onopen = () => ws.send(JSON.stringify({ token: this.opts.token }));
      ws.onmessage = (message) => {
        let event;
        try { event = JSON.parse(message.data); } catch (error) { return; }
        if (event.type === "hello") {
          this.attempts = 0;
          this.setState("live");
          this.opts.onResync();
        } else if (event.type === "overflow") {
          this.setState("reconnecting");
        } else if (event.type) {
          this.opts.onEvent(event);
        }
      };
      ws.onclose = (closed) => {
        if (this.ws === ws) this.ws = null;
        if (this.stopped) return;
        if (closed.code === 4401) { this.opts.onAuthFailed(); return; }
        this.setState("reconnecting");
        const delay = Math.min(15000, 500 * 2 ** this.attempts) * (0.75 + Math.random() * 0.5);
        this.attempts += 1;
        this.connectSoon(delay);
      };
    }
    connectSoon(delay) {
      clearTimeout(this.timer);
      this.timer = setTimeout(() => this.connect(), delay);
    }
    setState(state) {
      const badge = DR.$("conn");
      if (badge) {
        badge.hidden = false;
        badge.dataset.state = state;
        badge.textContent = DR.t("conn." + state);
      }
      if (this.opts.onState) this.opts.onState(state);
    }
  }
  DR.Live = Live;

  // ---- idle timeout: warned idleWarningS before, with a button for more time (WCAG 2.2.1) --
  class IdleTimer {
    constructor(opts) {
      this.opts = opts;
      this.timeoutS = opts.timeoutS || DR.config.idleTimeoutS;
      this.warningS = Math.min(opts.warningS || DR.config.idleWarningS, this.timeoutS);
      this.running = false;
      this.dialog = DR.$("idle-dialog");
      this.onActivity = () => { if (this.running && !this.dialog.open) this.reset(); };
      for (const name of ["pointerdown", "keydown", "input", "touchstart", "wheel"]) {
        document.addEventListener(name, this.onActivity, { passive: true, capture: true });
      }
      DR.$("idle-extend").addEventListener("click", () => this.extend());
      this.dialog.addEventListener("cancel", (event) => { event.preventDefault(); this.extend(); });
    }
    start() { this.running = true; this.reset(); }
    stop() {
      this.running = false;
      clearTimeout(this.warnTimer);
      clearInterval(this.tick);
      if (this.dialog.open) this.dialog.close();
    }
    reset() {
      clearTimeout(this.warnTimer);
      clearInterval(this.tick);
      this.deadline = Date.now() + this.timeoutS * 1000;
      this.warnTimer = setTimeout(() => this.warn(), (this.timeoutS - this.warningS) * 1000);
    }
    extend() {
      if (this.dialog.open) this.dialog.close();
      if (this.running) this.reset();
    }
    warn() {
      if (!this.running) return;
      const left = () => (this.deadline - Date.now()) / 1000;
      DR.$("idle-text").textContent = DR.t(this.opts.messageKey, { s: Math.round(left()) });
      const countdown = DR.$("idle-countdown");
      countdown.textContent = DR.fmtClock(left());
      this.dialog.showModal();
      DR.$("idle-extend").focus();
      this.tick = setInterval(() => {
        countdown.textContent = DR.fmtClock(left());
        if (left() <= 0) {
          this.stop();
          this.opts.onTimeout();
        }
      }, 250);
    }
  }
  DR.IdleTimer = IdleTimer;

  // ---- confirm dialog ------------------------------------------------------------------
  DR.confirm = function (text, yesKey) {
    const dialog = DR.$("confirm-dialog");
    DR.$("confirm-text").textContent = text;
    const yes = DR.$("confirm-yes");
    const no = DR.$("confirm-no");
    yes.textContent = DR.t(yesKey || "common.yes");
    return new Promise((resolve) => {
      const done = (answer) => {
        yes.onclick = no.onclick = dialog.oncancel = null;
        dialog.close();
        resolve(answer);
      };
      yes.onclick = () => done(true);
      no.onclick = () => done(false);
      dialog.oncancel = (event) => { event.preventDefault(); done(false); };
      dialog.showModal();
      no.focus();
    });
  };

  // ---- start ---------------------------------------------------------------------------
  DR.ready = function (fn) {
    const run = () => {
      root.lang = DR.lang;
      DR.applyI18n(document);
      updateLangSwitch();
      const button = DR.$("lang-switch");
      if (button) button.addEventListener("click", () => DR.setLang(DR.lang === "ko" ? "en" : "ko"));
      fn();
    };
    if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", run);
    else run();
  };
})();
