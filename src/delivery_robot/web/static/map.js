// The world map (GET /api/v1/map) as an SVG, with HTML markers on top: buttons to pick a
// dropoff on /shop, robots and orders on /ops. Map frame in metres, y up.
"use strict";
(function () {
  const DR = (window.DR = window.DR || {});
  const SVG = "http://www.w3.org/2000/svg";
  const PAD = 4;

  function svgEl(tag, attrs) {
    const node = document.createElementNS(SVG, tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
    return node;
  }

  class WorldMap {
    constructor(container, world) {
      this.container = container;
      this.world = world;
      const xs = [], ys = [];
      for (const w of world.waypoints) { xs.push(w.x); ys.push(w.y); }
      for (const z of world.zones) for (const [x, y] of z.polygon) { xs.push(x); ys.push(y); }
      this.minX = Math.min(...xs) - PAD;
      this.maxY = Math.max(...ys) + PAD;
      this.width = Math.max(...xs) + PAD - this.minX;
      this.height = this.maxY - (Math.min(...ys) - PAD);
      container.replaceChildren();
      container.classList.add("map");
      container.style.aspectRatio = this.width + " / " + this.height;
      const svg = svgEl("svg", {
        viewBox: "0 0 " + this.width + " " + this.height, preserveAspectRatio: "none",
        "aria-hidden": "true", focusable: "false", class: "map-svg",
      });
      const zoneClass = { crosswalk: "zone-crosswalk", geofence: "zone-geofence", park: "zone-park" };
      for (const zone of world.zones) {
        svg.append(svgEl("polygon", {
          points: zone.polygon.map(([x, y]) => this.px(x) + "," + this.py(y)).join(" "),
          class: "zone " + (zoneClass[zone.kind] || "zone-slow"),
        }));
      }
      const byName = Object.fromEntries(world.waypoints.map((w) => [w.name, w]));
      for (const lane of world.lanes) {
        const a = byName[lane.start], b = byName[lane.end];
        if (!a || !b) continue;
        svg.append(svgEl("line", {
          x1: this.px(a.x), y1: this.py(a.y), x2: this.px(b.x), y2: this.py(b.y), class: "lane",
        }));
      }
      for (const w of world.waypoints) {
        const r = w.kind === "junction" ? 0.6 : 1.4;
        svg.append(svgEl("circle", { cx: this.px(w.x), cy: this.py(w.y), r, class: "wp wp-" + w.kind }));
      }
      this.svg = svg;
      this.layer = DR.el("div", { class: "map-layer" });
      container.append(svg, this.layer);
    }
    px(x) { return x - this.minX; }
    py(y) { return this.maxY - y; }
    // Place an HTML element at a map position (percent of the box, so it follows the scale).
    place(node, x, y) {
      node.style.left = (100 * this.px(x) / this.width) + "%";
      node.style.top = (100 * this.py(y) / this.height) + "%";
      return node;
    }
    waypoint(name) { return this.world.waypoints.find((w) => w.name === name); }
    clearMarkers(kind) {
      for (const node of this.layer.querySelectorAll("[data-marker='" + kind + "']")) node.remove();
    }
  }
  DR.WorldMap = WorldMap;
})();
