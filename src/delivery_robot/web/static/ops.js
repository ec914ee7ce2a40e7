// /ops: the operator's live map, alerts, robots (remote e-stop and resume), orders and log.
"use strict";
(function () {
  const DR = window.DR;
  const $ = DR.$;
  const el = DR.el;
  const LOADED = ["in_transit", "awaiting_recipient", "returning"];
  const ROBOT_POLL_MS = 2000; // robot positions are polled: the websocket carries orders and alerts
  const stuckAfterS = Number(document.documentElement.dataset.stuckAfterS) || 900;

  const state = {
    token: null, map: null, worldMap: null, robots: [], orders: new Map(), alerts: [], log: [],
    acknowledged: new Set(JSON.parse(sessionStorage.getItem("dr.ops.ack") || "[]")),
    clockOffset: 0, live: null, idle: null, poller: null, busy: new Set(), results: new Map(),
  };

  DR.ready(() => {
    $("sign-in-form").addEventListener("submit", onSignIn);
    $("sign-out").addEventListener("click", () => signOut());
    $("operator-name").value = sessionStorage.getItem("dr.ops.name") || "";
    $("operator-name").addEventListener("change", () => sessionStorage.setItem("dr.ops.name", $("operator-name").value.trim()));
    DR.onLang(renderAll);
    state.idle = new DR.IdleTimer({ messageKey: "idle.ops_text", onTimeout: () => signOut("idle") });
    const token = DR.tokens.fromFragment("ops") || DR.tokens.get("ops");
    if (token) signIn(token, false); else showSignIn();
  });

  function serverNow() { return Date.now() / 1000 + state.clockOffset; }

  // ---- sign in / out -------------------------------------------------------------------
  function showSignIn(messageKey) {
    $("app").hidden = true;
    $("sign-out").hidden = true;
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
      if (error.status === 401) DR.tokens.clear("ops");
      showSignIn();
      $("sign-in-error").textContent = DR.errorText(error);
      return;
    }
    if (!me.is_operator) { showSignIn("error.not_operator"); return; }
    DR.tokens.set("ops", token, remember);
    state.token = token;
    state.clockOffset = me.now - Date.now() / 1000;
    $("token").value = "";
    $("sign-in").hidden = true;
    $("app").hidden = false;
    $("sign-out").hidden = false;
    try {
      state.map = await DR.api("/api/v1/map", { token });
      state.worldMap = new DR.WorldMap($("ops-map"), state.map);
    } catch (error) { $("map-summary").textContent = DR.errorText(error); }
    state.live = new DR.Live({ token, onEvent, onResync: resync, onAuthFailed: () => signOut("error.unauthorized") });
    state.live.start();
    state.poller = setInterval(() => { if (document.visibilityState === "visible") pollRobots(); }, ROBOT_POLL_MS);
    state.idle.start();
    $("main").focus();
  }

  function signOut(reason) {
    if (state.live) state.live.stop();
    clearInterval(state.poller);
    state.idle.stop();
    DR.tokens.clear("ops");
    Object.assign(state, { token: null, live: null, robots: [], orders: new Map(), alerts: [], log: [] });
    $("conn").hidden = true;
    showSignIn(reason === "idle" ? "idle.signed_out" : reason);
  }

  // ---- data ------------------------------------------------------------------------------
  async function resync() {
    try {
      const [me, robots, orders, alerts, log] = await Promise.all([
        DR.api("/api/v1/me", { token: state.token }),
        DR.api("/api/v1/robots", { token: state.token }),
        DR.api("/api/v1/orders", { token: state.token }),
        DR.api("/api/v1/alerts", { token: state.token }),
        DR.api("/api/v1/operator_log?limit=20", { token: state.token }),
      ]);
      state.clockOffset = me.now - Date.now() / 1000;
      state.robots = robots.robots;
      state.orders = new Map(orders.orders.map((o) => [o.order_id, o]));
      state.alerts = alerts.alerts;
      state.log = log.entries;
      renderAll();
    } catch (error) {
      if (error.status === 401) signOut("error.unauthorized");
    }
  }

  async function pollRobots() {
    try {
      state.robots = (await DR.api("/api/v1/robots", { token: state.token })).robots;
      renderRobots();
      renderMap();
      renderAlerts();
    } catch (error) { /* shown by the connection badge when it matters */ }
  }

  function onEvent(event) {
    if (event.type === "order_status") {
      const known = state.orders.get(event.order_id);
      if (["delivered", "cancelled", "failed"].includes(event.state)) state.orders.delete(event.order_id);
      else if (known) {
        if (event.sequence > known.sequence) {
          Object.assign(known, { state: event.state, robot_id: event.robot_id, sequence: event.sequence, updated_at: event.at });
        }
      } else {
        fetchOrder(event.order_id);
      }
      renderOrders();
      renderMap();
      renderAlerts();
    } else if (event.type === "alert") {
      state.alerts.push(event);
      state.alerts = state.alerts.slice(-200);
      renderAlerts();
      DR.announce(DR.alertName(event.kind) + (event.robot_id ? " · " + event.robot_id : ""));
    } else if (event.type === "operator_command") {
      state.log.unshift(event);
      state.log = state.log.slice(0, 20);
      renderLog();
    }
  }

  async function fetchOrder(orderId) {
    try {
      const order = await DR.api("/api/v1/orders/" + encodeURIComponent(orderId), { token: state.token });
      state.orders.set(order.order_id, order);
      renderOrders();
      renderMap();
    } catch (error) { /* already gone */ }
  }

  // ---- rendering -------------------------------------------------------------------------
  function renderAll() { renderMap(); renderAlerts(); renderRobots(); renderOrders(); renderLog(); }

  function robotStatus(robot) {
    if (!robot.online) return "offline";
    if (robot.mode === "estop") return "estop";
    if (robot.mode === "fault") return "fault";
    return "ok";
  }

  function renderMap() {
    const map = state.worldMap;
    if (!map) return;
    map.clearMarkers("order");
    map.clearMarkers("robot");
    const perDropoff = new Map();
    for (const order of state.orders.values()) {
      perDropoff.set(order.dropoff_waypoint, (perDropoff.get(order.dropoff_waypoint) || 0) + 1);
    }
    for (const [name, count] of perDropoff) {
      const w = map.waypoint(name);
      if (w) map.layer.append(map.place(el("span", { class: "map-order", "data-marker": "order", "aria-hidden": "true", text: "▣" + (count > 1 ? count : "") }), w.x, w.y));
    }
    let placed = 0;
    for (const robot of state.robots) {
      let x = robot.x, y = robot.y;
      if (x === null || x === undefined) {
        const w = map.waypoint(robot.waypoint);
        if (!w) continue;
        x = w.x; y = w.y;
      }
      placed += 1;
      map.layer.append(map.place(el("span", {
        class: "map-robot robot-" + robotStatus(robot), "data-marker": "robot", "data-robot": robot.robot_id,
        "aria-hidden": "true", text: robot.robot_id,
      }), x, y));
    }
    $("map-summary").textContent = DR.t("ops.map_summary", { robots: placed, orders: state.orders.size });
  }

  function conditions() {
    // Alerts that hold while a condition lasts, computed from the current state.
    const now = serverNow();
    const list = [];
    for (const robot of state.robots) {
      const status = robotStatus(robot);
      if (status !== "ok") list.push({ key: "c-" + status + "-" + robot.robot_id, kind: "robot_" + status, robot_id: robot.robot_id, order_id: "", at: robot.last_seen || now, condition: true });
    }
    for (const order of state.orders.values()) {
      if (LOADED.includes(order.state) && now - order.updated_at > stuckAfterS) {
        list.push({ key: "c-stuck-" + order.order_id, kind: "loaded_order_stuck", robot_id: order.robot_id || "", order_id: order.order_id, at: order.updated_at, condition: true,
          message: DR.t("ops.stuck_for", { time: DR.fmtDuration(now - order.updated_at) }) });
      }
    }
    return list;
  }

  function renderAlerts() {
    const recent = state.alerts.filter((a) => !state.acknowledged.has(a.id) && a.kind !== "robot_back_online")
      .slice(-30).reverse().map((a) => Object.assign({ key: "a-" + a.id }, a));
    const items = [...conditions(), ...recent];
    DR.renderList($("alerts"), items, (a) => a.key, (a) => [a.kind, a.message, Math.floor(a.at)].join("|"), alertItem);
    $("alerts-empty").hidden = items.length > 0;
  }

  function alertItem(alert) {
    const severe = ["tamper", "robot_estop", "handoff_lockout", "lock_fault", "robot_fault", "robot_offline", "goods_on_offline_robot", "loaded_order_stuck", "moved_with_door_open"].includes(alert.kind);
    const where = [alert.robot_id, alert.order_id ? DR.shortId(alert.order_id) : ""].filter(Boolean).join(" · ");
    return el("li", { class: "alert " + (severe ? "alert-severe" : "alert-info"), dataset: { kind: alert.kind } },
      el("p", { class: "alert-title" }, el("span", { "aria-hidden": "true", text: severe ? "⚠ " : "ℹ " }), DR.alertName(alert.kind)),
      where ? el("p", { class: "alert-where", text: where }) : null,
      alert.message ? el("p", { class: "muted", text: alert.message }) : null,
      el("p", { class: "muted", text: alert.condition ? DR.t("ops.since", { time: DR.fmtTime(alert.at) }) : DR.fmtTime(alert.at) }),
      alert.condition ? null : el("button", {
        type: "button", class: "secondary", "data-action": "ack", text: DR.t("ops.ack"),
        "aria-label": DR.t("ops.ack_label", { kind: DR.alertName(alert.kind) }),
        onclick: () => { state.acknowledged.add(alert.id); sessionStorage.setItem("dr.ops.ack", JSON.stringify([...state.acknowledged])); renderAlerts(); },
      }));
  }

  function renderRobots() {
    DR.renderList($("robots"), state.robots, (r) => r.robot_id,
      (r) => [r.online, r.mode, r.waypoint, Math.round((r.battery || 0) * 100), r.mission_id, state.busy.has(r.robot_id), state.results.get(r.robot_id) || ""].join("|"),
      robotCard);
    $("robots-empty").hidden = state.robots.length > 0;
  }

  function robotCard(robot) {
    const status = robotStatus(robot);
    const id = "robot-h-" + robot.robot_id;
    const busy = state.busy.has(robot.robot_id);
    const facts = el("dl", { class: "facts" },
      el("dt", { text: DR.t("ops.mode") }), el("dd", { text: robot.mode ? DR.t("mode." + robot.mode) : "—" }),
      el("dt", { text: DR.t("ops.where") }), el("dd", { text: robot.waypoint ? DR.placeName(state.map, robot.waypoint) : "—" }),
      el("dt", { text: DR.t("ops.battery") }), el("dd", { text: robot.battery === null ? "—" : Math.round(robot.battery * 100) + "%" }),
      el("dt", { text: DR.t("ops.mission") }), el("dd", { text: robot.mission_id || "—" }));
    return el("li", { class: "robot robot-" + status, dataset: { robotId: robot.robot_id, status } },
      el("h3", { id }, robot.robot_id, " ", el("span", { class: "badge badge-robot-" + status, text: DR.t("ops.status_" + status) })),
      facts,
      el("p", { class: "result", role: "status", text: state.results.get(robot.robot_id) || "" }),
      el("div", { class: "actions" },
        el("button", { type: "button", class: "danger big", "data-action": "estop", "aria-describedby": id, disabled: busy,
          text: DR.t("ops.estop"), onclick: () => command(robot, "estop") }),
        el("button", { type: "button", class: "secondary big", "data-action": "resume", "aria-describedby": id, disabled: busy,
          text: DR.t("ops.resume"), onclick: () => command(robot, "resume") })));
  }

  async function command(robot, action) {
    if (action === "resume") {
      const ok = await DR.confirm(DR.t("ops.resume_q", { robot: robot.robot_id }), "ops.resume");
      if (!ok) return;
    }
    state.busy.add(robot.robot_id);
    state.results.set(robot.robot_id, DR.t("ops.sending"));
    renderRobots();
    try {
      const out = await DR.api("/api/v1/robots/" + encodeURIComponent(robot.robot_id) + "/" + action, {
        method: "POST", token: state.token, body: { operator: $("operator-name").value.trim() },
      });
      state.results.set(robot.robot_id, DR.t("ops.done_" + action, { time: DR.fmtTime(out.at), who: out.who }));
    } catch (error) {
      state.results.set(robot.robot_id, DR.t("ops.failed", { why: DR.errorText(error) }));
    } finally {
      state.busy.delete(robot.robot_id);
      renderRobots();
      pollRobots();
    }
  }

  function renderOrders() {
    const orders = [...state.orders.values()].sort((a, b) => a.created_at - b.created_at);
    DR.renderList($("ops-orders"), orders, (o) => o.order_id, (o) => [o.state, o.sequence, o.robot_id].join("|"), (order) =>
      el("li", { class: "order compact state-" + order.state, dataset: { orderId: order.order_id, state: order.state } },
        el("p", { class: "order-line" }, el("strong", { text: order.shop_id }), " → ", DR.placeName(state.map, order.dropoff_waypoint), " ",
          el("span", { class: "order-id", text: DR.shortId(order.order_id) })),
        el("p", {}, el("span", { class: "badge badge-" + order.state, text: DR.t("state." + order.state) }),
          order.robot_id ? " " + order.robot_id : "")));
    $("ops-orders-empty").hidden = orders.length > 0;
  }

  function renderLog() {
    $("log").replaceChildren(...state.log.map((entry) => el("li", { class: "log-entry", dataset: { action: entry.action } },
      el("span", { class: "muted", text: DR.fmtTime(entry.at) }), " ",
      el("strong", { text: DR.t("ops.log_" + entry.action, { robot: entry.robot_id }) }), " — ",
      entry.who, " — ",
      el("span", { class: entry.success ? "ok-text" : "error-text", text: entry.success ? DR.t("ops.log_ok") : DR.t("ops.log_failed", { code: entry.code }) }))));
    $("log-empty").hidden = state.log.length > 0;
  }
})();
