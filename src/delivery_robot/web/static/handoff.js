// /handoff/<order>: the recipient enters the PIN (or uses the QR code) to open the robot.
// No token: the order id in the link plus the PIN is the credential. The status is polled
// (the websocket needs a shop or operator token), with backoff when the network drops.
"use strict";
(function () {
  const DR = window.DR;
  const $ = DR.$;
  const el = DR.el;
  const orderId = document.documentElement.dataset.orderId;
  const base = "/api/v1/handoff/" + encodeURIComponent(orderId);
  const POLL_MS = 5000;
  const FINAL = ["delivered", "closed"];

  const state = { status: null, lockedUntil: 0, attemptsLeft: null, failures: 0, pollTimer: null,
    lockTimer: null, busy: false, feedback: null, qrToken: null, idle: null };

  DR.ready(() => {
    buildKeypad();
    $("pin-form").addEventListener("submit", (event) => { event.preventDefault(); submit("pin"); });
    $("pin").addEventListener("input", () => {
      $("pin").value = $("pin").value.replace(/\D/g, "").slice(0, 6);
      typed();
    });
    const match = /(?:^#|&)qr=([^&]+)/.exec(location.hash);
    if (match) {
      state.qrToken = decodeURIComponent(match[1]);
      $("open-qr").hidden = false;
      $("open-qr").addEventListener("click", () => submit("qr"));
    }
    state.idle = new DR.IdleTimer({ messageKey: "idle.handoff_text", onTimeout: clearEntry });
    DR.onLang(() => { renderStatus(); renderFeedback(); renderAttempts(); });
    poll();
  });

  // ---- status ----------------------------------------------------------------------------
  async function poll() {
    clearTimeout(state.pollTimer);
    try {
      state.status = await DR.api(base);
      state.failures = 0;
      if (state.status.attempts_left !== null && state.attemptsLeft === null) {
        state.attemptsLeft = state.status.attempts_left;
      }
      if (state.status.lockout_remaining_s > 0) lockFor(state.status.lockout_remaining_s);
    } catch (error) {
      state.failures += 1;
      if (error.status === 404) { state.status = { status: "unknown" }; }
      else if (!state.status) { state.status = { status: "offline" }; }
      else { state.status.offline = true; }
    }
    renderStatus();
    renderAttempts();
    if (state.status && FINAL.includes(state.status.status)) return;
    const delay = state.failures ? Math.min(30000, POLL_MS * 2 ** state.failures) : POLL_MS;
    state.pollTimer = setTimeout(poll, delay);
  }

  function renderStatus() {
    const s = state.status;
    if (!s) return;
    const line = $("status");
    const detail = $("status-detail");
    line.dataset.status = s.status;
    line.textContent = DR.t("handoff.status_" + s.status);
    detail.textContent = "";
    if (s.dropoff_label) {
      detail.textContent = DR.t("handoff.status_detail", { shop: s.shop_name, place: s.dropoff_label });
    }
    if (s.status === "on_the_way" && s.eta_s !== null && s.eta_s !== undefined) {
      line.textContent += " " + DR.t("handoff.eta", { eta: DR.fmtDuration(s.eta_s) });
    }
    if (s.offline) detail.textContent += " " + DR.t("handoff.offline");
    const canEnter = s.status === "arrived" && Date.now() >= state.lockedUntil;
    $("pin-section").hidden = FINAL.includes(s.status) || s.status === "unknown";
    $("open").disabled = !canEnter || state.busy;
    $("open-qr").disabled = !canEnter || state.busy;
  }

  function renderAttempts() {
    const box = $("attempts");
    if (state.lockedUntil > Date.now()) {
      box.textContent = DR.t("handoff.locked_wait", { time: DR.fmtClock((state.lockedUntil - Date.now()) / 1000) });
    } else if (state.attemptsLeft !== null) {
      box.textContent = DR.t("handoff.attempts_left", { n: state.attemptsLeft });
    } else {
      box.textContent = DR.t("handoff.attempts_intro");
    }
  }

  // ---- entering the PIN ------------------------------------------------------------------
  function buildKeypad() {
    const pad = $("keypad");
    const key = (label, action, aria) => el("button", {
      type: "button", class: "key", "data-key": action, "data-i18n-attr": aria ? "aria-label:" + aria : null,
      text: label, onclick: () => press(action),
    });
    for (const digit of ["1", "2", "3", "4", "5", "6", "7", "8", "9"]) pad.append(key(digit, digit));
    pad.append(key("⌫", "back", "handoff.key_back"), key("0", "0"), key("✕", "clear", "handoff.key_clear"));
    DR.applyI18n(pad);
  }

  function press(action) {
    const input = $("pin");
    if (action === "back") input.value = input.value.slice(0, -1);
    else if (action === "clear") input.value = "";
    else if (input.value.length < 6) input.value += action;
    typed();
  }

  function typed() {
    if ($("pin").value) state.idle.start(); else state.idle.stop();
  }

  function clearEntry() {
    $("pin").value = "";
    state.idle.stop();
    showFeedback("info", "handoff.cleared");
  }

  async function submit(method) {
    if (state.busy) return;
    const pin = $("pin").value;
    if (method === "pin" && !/^\d{6}$/.test(pin)) {
      showFeedback("error", "handoff.need_six");
      $("pin").focus();
      return;
    }
    state.busy = true;
    renderStatus();
    showFeedback("info", "handoff.checking");
    try {
      const answer = await DR.api(base + "/verify", {
        method: "POST", body: { method, credential: method === "pin" ? pin : state.qrToken },
      });
      state.attemptsLeft = null;
      $("pin").value = "";
      state.idle.stop();
      showFeedback("success", "handoff.granted");
      if (answer.granted) setTimeout(poll, 2000);
    } catch (error) {
      handleRefusal(error);
    } finally {
      state.busy = false;
      renderStatus();
      renderAttempts();
    }
  }

  function handleRefusal(error) {
    const body = error.body || {};
    if (typeof body.attempts_left === "number") state.attemptsLeft = body.attempts_left;
    switch (error.code) {
      case "wrong_credential":
        $("pin").value = "";
        showFeedback("error", "handoff.wrong", { n: state.attemptsLeft });
        $("pin").focus();
        break;
      case "locked_out":
        $("pin").value = "";
        lockFor(body.lockout_remaining_s || 60);
        showFeedback("error", "handoff.locked");
        break;
      case "not_at_dropoff": showFeedback("info", "handoff.not_here"); poll(); break;
      case "already_delivered": case "already_used": showFeedback("info", "handoff.already"); poll(); break;
      case "rate_limited": showFeedback("error", "handoff.slow_down"); break;
      default: showFeedback("error", null, null, DR.errorText(error));
    }
  }

  function lockFor(seconds) {
    state.lockedUntil = Date.now() + seconds * 1000;
    clearInterval(state.lockTimer);
    state.lockTimer = setInterval(() => {
      renderAttempts();
      if (Date.now() >= state.lockedUntil) {
        clearInterval(state.lockTimer);
        state.attemptsLeft = null;
        renderStatus();
        renderAttempts();
      }
    }, 1000);
    renderStatus();
  }

  // ---- feedback: large, worded, announced -----------------------------------------------
  function showFeedback(kind, key, params, text) {
    state.feedback = { kind, key, params, text };
    renderFeedback();
  }

  function renderFeedback() {
    const box = $("feedback");
    const f = state.feedback;
    if (!f) { box.hidden = true; return; }
    box.hidden = false;
    box.className = "feedback feedback-" + f.kind;
    box.dataset.kind = f.kind;
    const icon = { success: "✔", error: "✖", info: "ℹ" }[f.kind];
    box.replaceChildren(el("span", { class: "feedback-icon", "aria-hidden": "true", text: icon }),
      el("span", { text: f.text || DR.t(f.key, f.params || {}) }));
  }
})();
