// /shop: sign in with the shop token; request a robot; follow the shop's orders live.
"use strict";
(function () {
  const DR = window.DR;
  const $ = DR.$;
  const el = DR.el;
  const TERMINAL = ["delivered", "cancelled", "failed"];
  const HISTORY_STATES = ["delivered", "cancelled", "failed"];
  const CANCELLABLE = ["requested", "assigned", "to_pickup", "awaiting_load", "in_transit",
    "awaiting_recipient"];
  const REFRESH_MS = 20000; // ETA and queue positions are re-read now and then

  const state = {
    token: null, me: null, map: null, worldMap: null, orders: new Map(), history: [],
    live: null, idle: null, refresh: null, notices: [],
  };

  DR.ready(() => {
    $("sign-in-form").addEventListener("submit", onSignIn);
    $("sign-out").addEventListener("click", () => signOut());
    $("new-order").addEventListener("submit", onSubmitOrder);
    $("note").addEventListener("input", updateNoteCount);
    $("dropoff").addEventListener("change", () => highlightPin($("dropoff").value));
    $("cred-done").addEventListener("click", hideCredentials);
    $("cred-copy").addEventListener("click", copyLink);
    DR.onLang(() => { renderAll(); fillDropoffs(); updateNoteCount(); if (state.me) showWho(); });
    state.idle = new DR.IdleTimer({ messageKey: "idle.shop_text", onTimeout: () => signOut("idle") });
    const token = DR.tokens.fromFragment("shop") || DR.tokens.get("shop");
    if (token) signIn(token, false); else showSignIn();
  });

  // ---- sign in / out -------------------------------------------------------------------
  function showSignIn(messageKey) {
    $("app").hidden = true;
    $("sign-out").hidden = true;
    $("who").hidden = true;
    $("sign-in").hidden = false;
    $("sign-in-error").textContent = messageKey ? DR.t(messageKey) : "";
    $("token").focus();
  }

  async function onSignIn(event) {
    event.preventDefault();
    const token = $("token").value.trim();
    if (!token) { $("sign-in-error").textContent = DR.t("error.token_missing"); return; }
    await signIn(token, $("remember").checked);
  }

  async function signIn(token, remember) {
    let me;
    try {
      me = await DR.api("/api/v1/me", { token });
    } catch (error) {
      if (error.status === 401) DR.tokens.clear("shop");
      showSignIn();
      $("sign-in-error").textContent = DR.errorText(error);
      return;
    }
    if (me.is_operator) { showSignIn("error.operator_on_shop"); return; }
    DR.tokens.set("shop", token, remember);
    state.token = token;
    state.me = me;
    $("token").value = "";
    $("sign-in").hidden = true;
    $("app").hidden = false;
    $("sign-out").hidden = false;
    showWho();
    try {
      state.map = await DR.api("/api/v1/map", { token });
      state.worldMap = new DR.WorldMap($("shop-map"), state.map);
      fillDropoffs();
    } catch (error) {
      $("order-error").textContent = DR.errorText(error);
    }
    updateNoteCount();
    state.live = new DR.Live({
      token, onEvent, onResync: resync, onAuthFailed: () => signOut("error.unauthorized"),
    });
    state.live.start();
    state.refresh = setInterval(() => { if (document.visibilityState === "visible") refreshOpen(); }, REFRESH_MS);
    state.idle.start();
    $("main").focus();
  }

  function signOut(reason) {
    if (state.live) state.live.stop();
    clearInterval(state.refresh);
    state.idle.stop();
    DR.tokens.clear("shop");
    Object.assign(state, { token: null, me: null, live: null, orders: new Map(), history: [], notices: [] });
    hideCredentials();
    $("orders").replaceChildren();
    $("history").replaceChildren();
    $("notice-list").replaceChildren();
    $("conn").hidden = true;
    showSignIn(reason === "idle" ? "idle.signed_out" : reason);
  }

  function showWho() {
    $("who").hidden = false;
    $("who").textContent = DR.t("shop.signed_in_as", { name: state.me.shop_name || state.me.caller });
  }

  // ---- data ------------------------------------------------------------------------------
  async function resync() {
    // After every (re)connect: re-read everything, events may have been missed meanwhile.
    try {
      const [open, alerts, ...finished] = await Promise.all([
        DR.api("/api/v1/orders", { token: state.token }),
        DR.api("/api/v1/alerts", { token: state.token }),
        ...HISTORY_STATES.map((s) => DR.api("/api/v1/orders?state=" + s, { token: state.token })),
      ]);
      state.orders = new Map(open.orders.map((o) => [o.order_id, o]));
      state.history = finished.flatMap((list) => list.orders)
        .sort((a, b) => b.updated_at - a.updated_at).slice(0, 30);
      state.notices = alerts.alerts.slice(-5).reverse();
      renderAll();
    } catch (error) {
      if (error.status === 401) signOut("error.unauthorized");
    }
  }

  async function refreshOpen() {
    try {
      const open = await DR.api("/api/v1/orders", { token: state.token });
      for (const order of open.orders) {
        const known = state.orders.get(order.order_id);
        if (!known || order.sequence >= known.sequence) state.orders.set(order.order_id, order);
      }
      renderOrders();
    } catch (error) { /* the next refresh or reconnect tries again */ }
  }

  function onEvent(event) {
    if (event.type === "order_status") {
      const order = state.orders.get(event.order_id);
      if (!order) {
        if (!state.history.some((o) => o.order_id === event.order_id)) fetchOrder(event.order_id, event);
        return;
      }
      if (event.sequence <= order.sequence) return;
      Object.assign(order, {
        state: event.state, robot_id: event.robot_id, sequence: event.sequence,
        queue_position: event.queue_position, reason: event.reason, updated_at: event.at,
      });
      if (event.state !== "requested") order.queue_reason = "";
      if (!["assigned", "to_pickup", "in_transit"].includes(event.state)) order.eta_s = null;
      if (TERMINAL.includes(event.state)) {
        state.orders.delete(order.order_id);
        state.history.unshift(order);
        renderHistory();
      }
      renderOrders();
      DR.announce(DR.t("shop.announce_state", {
        place: DR.placeName(state.map, order.dropoff_waypoint), state: DR.t("state." + event.state),
      }));
    } else if (event.type === "alert") {
      state.notices.unshift(event);
      state.notices = state.notices.slice(0, 5);
      renderNotices();
    }
  }

  // An order this page has not seen (made on another tablet): fetch it once; events that
  // arrive meanwhile are applied after it, so none is lost or applied twice.
  const fetching = new Map();
  async function fetchOrder(orderId, event) {
    if (fetching.has(orderId)) { fetching.get(orderId).push(event); return; }
    fetching.set(orderId, [event]);
    try {
      const order = await DR.api("/api/v1/orders/" + encodeURIComponent(orderId), { token: state.token });
      if (!state.orders.has(orderId) && !state.history.some((o) => o.order_id === orderId)) {
        if (TERMINAL.includes(order.state)) state.history.unshift(order);
        else state.orders.set(order.order_id, order);
      }
    } catch (error) { /* gone or not ours */ }
    const queued = fetching.get(orderId);
    fetching.delete(orderId);
    renderAll();
    for (const later of queued) if (state.orders.has(orderId)) onEvent(later);
  }

  // ---- rendering -------------------------------------------------------------------------
  function renderAll() { renderOrders(); renderHistory(); renderNotices(); }

  function renderOrders() {
    const list = $("orders");
    const orders = [...state.orders.values()].sort((a, b) =>
      (b.state === "awaiting_load") - (a.state === "awaiting_load") || a.created_at - b.created_at);
    DR.renderList(list, orders, (o) => o.order_id,
      (o) => [o.state, o.sequence, o.robot_id, o.eta_s, o.eta_target, o.queue_position].join("|"),
      orderCard);
    $("orders-empty").hidden = orders.length > 0;
  }

  function orderCard(order) {
    const place = DR.placeName(state.map, order.dropoff_waypoint);
    const headingId = "order-h-" + order.order_id;
    const details = el("dl", { class: "facts" });
    const fact = (key, value) => { if (value) details.append(el("dt", { text: DR.t(key) }), el("dd", { text: value })); };
    fact("shop.robot", order.robot_id || "");
    if (order.eta_s !== null && order.eta_s !== undefined && order.eta_target) {
      fact(order.eta_target === "pickup" ? "shop.eta_pickup" : "shop.eta_dropoff", DR.fmtDuration(order.eta_s));
    }
    if (order.state === "requested") {
      fact("shop.queue", order.queue_position ? DR.t("shop.queue_position", { n: order.queue_position }) : DR.t("shop.queue_waiting"));
    }
    fact("shop.size", DR.t("size." + order.size));
    fact("shop.ordered_at", DR.fmtTime(order.created_at));
    const actions = el("div", { class: "actions" });
    if (order.state === "awaiting_load") {
      actions.append(el("button", {
        type: "button", class: "success big", "data-action": "loaded",
        "aria-describedby": headingId, text: DR.t("shop.loaded_send"), onclick: () => confirmLoaded(order),
      }));
    }
    if (CANCELLABLE.includes(order.state)) {
      actions.append(el("button", {
        type: "button", class: "secondary", "data-action": "cancel",
        "aria-describedby": headingId, text: DR.t("shop.cancel"), onclick: () => cancelOrder(order),
      }));
    }
    return el("li", { class: "order state-" + order.state, dataset: { orderId: order.order_id, state: order.state } },
      el("h3", { id: headingId }, place, " ", el("span", { class: "order-id", text: DR.shortId(order.order_id) })),
      el("p", { class: "badge badge-" + order.state, text: DR.t("state." + order.state) }),
      order.state === "awaiting_load" ? el("p", { class: "callout", text: DR.t("shop.load_now") }) : null,
      order.note ? el("p", { class: "note", text: order.note }) : null,
      details,
      el("p", { class: "error", role: "alert", "data-role": "order-error" }),
      actions);
  }

  function renderHistory() {
    const list = $("history");
    list.replaceChildren(...state.history.slice(0, 30).map((order) => el("li",
      { class: "history-item", dataset: { orderId: order.order_id, state: order.state } },
      el("span", { class: "history-place" }, DR.placeName(state.map, order.dropoff_waypoint), " ",
        el("span", { class: "order-id", text: DR.shortId(order.order_id) })),
      el("span", { class: "badge badge-" + order.state, text: DR.t("state." + order.state) }),
      el("span", { class: "muted", text: DR.fmtDateTime(order.updated_at) }))));
    $("history-empty").hidden = state.history.length > 0;
  }

  function renderNotices() {
    const section = $("notices");
    section.hidden = state.notices.length === 0;
    $("notice-list").replaceChildren(...state.notices.map((alert) => el("li", { class: "notice" },
      el("strong", { text: DR.alertName(alert.kind) }), " ",
      alert.order_id ? el("span", { class: "order-id", text: DR.shortId(alert.order_id) }) : null, " ",
      el("span", { class: "muted", text: DR.fmtTime(alert.at) }))));
  }

  // ---- new order -------------------------------------------------------------------------
  function fillDropoffs() {
    if (!state.map) return;
    const select = $("dropoff");
    const chosen = select.value;
    const dropoffs = state.map.waypoints.filter((w) => w.kind === "dropoff");
    select.replaceChildren(el("option", { value: "", text: DR.t("shop.dropoff_choose") }),
      ...dropoffs.map((w, i) => el("option", { value: w.name, text: (i + 1) + " · " + DR.placeName(state.map, w.name) })));
    select.value = chosen;
    const map = state.worldMap;
    map.clearMarkers("dropoff");
    dropoffs.forEach((w, i) => {
      const pin = el("button", {
        type: "button", class: "map-pin", "data-marker": "dropoff", "data-waypoint": w.name,
        "aria-label": DR.t("shop.map_pick", { n: i + 1, place: DR.placeName(state.map, w.name) }),
        "aria-pressed": String(w.name === chosen), text: String(i + 1),
        onclick: () => { select.value = w.name; highlightPin(w.name); },
      });
      map.layer.append(map.place(pin, w.x, w.y));
    });
    for (const shop of state.map.shops) {
      const w = map.waypoint(shop.waypoint);
      if (!w || shop.shop_id !== state.me.caller) continue;
      map.layer.append(map.place(el("span", { class: "map-label map-home", "data-marker": "dropoff",
        "aria-hidden": "true", text: DR.t("shop.map_you") }), w.x, w.y));
    }
  }

  function highlightPin(name) {
    for (const pin of document.querySelectorAll(".map-pin")) {
      pin.setAttribute("aria-pressed", String(pin.dataset.waypoint === name));
    }
  }

  function updateNoteCount() {
    const note = $("note");
    $("note-count").textContent = DR.t("shop.note_count", { n: note.value.length, max: 280 });
  }

  async function onSubmitOrder(event) {
    event.preventDefault();
    const errorBox = $("order-error");
    errorBox.textContent = "";
    const dropoff = $("dropoff").value;
    const weight = Number($("weight").value);
    if (!dropoff) { errorBox.textContent = DR.t("error.no_dropoff"); $("dropoff").focus(); return; }
    if (!(weight > 0)) { errorBox.textContent = DR.t("error.bad_weight"); $("weight").focus(); return; }
    const size = (document.querySelector("input[name=size]:checked") || {}).value || "medium";
    const button = $("order-submit");
    button.disabled = true;
    try {
      const created = await DR.api("/api/v1/orders", {
        method: "POST", token: state.token,
        headers: { "Idempotency-Key": crypto.randomUUID ? crypto.randomUUID() : String(Date.now()) + Math.random() },
        body: { dropoff_waypoint: dropoff, size, weight_kg: weight, note: $("note").value.trim() },
      });
      state.orders.set(created.order.order_id, created.order);
      renderOrders();
      $("note").value = "";
      updateNoteCount();
      if (created.credentials) showCredentials(created.order, created.credentials);
    } catch (error) {
      errorBox.textContent = DR.errorText(error);
    } finally {
      button.disabled = false;
    }
  }

  // ---- credentials: shown once ----------------------------------------------------------
  function showCredentials(order, credentials) {
    const link = location.origin + credentials.recipient_path;
    // Seen as one number, read out digit by digit.
    $("cred-pin").replaceChildren(
      el("span", { class: "pin-digits", "aria-hidden": "true", text: credentials.pin }),
      el("span", { class: "visually-hidden", text: DR.t("shop.cred_pin_spoken", { digits: credentials.pin.split("").join(" ") }) }));
    $("cred-link").textContent = link;
    $("cred-qr").innerHTML = credentials.qr_svg; // made by the server from the token (segno)
    $("cred-copied").textContent = "";
    $("credentials").hidden = false;
    $("credentials").dataset.orderId = order.order_id;
    $("credentials").focus();
  }

  function hideCredentials() {
    $("credentials").hidden = true;
    $("cred-pin").replaceChildren();
    $("cred-link").textContent = "";
    $("cred-qr").replaceChildren();
  }

  async function copyLink() {
    const text = $("cred-link").textContent;
    try {
      await navigator.clipboard.writeText(text);
      $("cred-copied").textContent = DR.t("shop.cred_copied");
    } catch (error) {
      const range = document.createRange();
      range.selectNodeContents($("cred-link"));
      getSelection().removeAllRanges();
      getSelection().addRange(range);
      $("cred-copied").textContent = DR.t("shop.cred_select");
    }
  }

  // ---- actions on orders ----------------------------------------------------------------
  function cardError(order, error) {
    const card = document.querySelector("li[data-order-id='" + order.order_id + "'] [data-role=order-error]");
    if (card) card.textContent = DR.errorText(error);
  }

  async function confirmLoaded(order) {
    try {
      const changed = await DR.api("/api/v1/orders/" + encodeURIComponent(order.order_id) + "/loaded",
        { method: "POST", token: state.token });
      mergeChanged(changed.order);
    } catch (error) { cardError(order, error); }
  }

  async function cancelOrder(order) {
    const loaded = ["in_transit", "awaiting_recipient"].includes(order.state);
    const ok = await DR.confirm(DR.t(loaded ? "shop.cancel_loaded_q" : "shop.cancel_q",
      { place: DR.placeName(state.map, order.dropoff_waypoint) }), "shop.cancel_yes");
    if (!ok) return;
    try {
      const changed = await DR.api("/api/v1/orders/" + encodeURIComponent(order.order_id) + "/cancel",
        { method: "POST", token: state.token, body: { reason: "cancelled on the shop tablet" } });
      mergeChanged(changed.order);
    } catch (error) { cardError(order, error); }
  }

  function mergeChanged(order) {
    const known = state.orders.get(order.order_id);
    if (known && known.sequence > order.sequence) return; // the websocket was faster
    if (TERMINAL.includes(order.state)) {
      state.orders.delete(order.order_id);
      if (!state.history.some((o) => o.order_id === order.order_id)) state.history.unshift(order);
      renderHistory();
    } else {
      state.orders.set(order.order_id, Object.assign(known || {}, order));
    }
    renderOrders();
  }
})();
