// The map, drawn from the registry's coordinates as SVG: it works with no network at all
// (many township offices have a poor line). Open alerts come from the live push.

import { label, t } from "./i18n.js";
import { api, h, svg } from "./util.js";
import { live, onAlerts } from "./live.js";

const WIDTH = 1000;
const HEIGHT = 640;
const PAD = 40;

function projection(points) {
  const lats = points.map(p => p.lat), lons = points.map(p => p.lon);
  const minLat = Math.min(...lats), maxLat = Math.max(...lats), minLon = Math.min(...lons), maxLon = Math.max(...lons);
  const midLat = (minLat + maxLat) / 2;
  // Equirectangular with cos(latitude): true enough over one county.
  const kx = Math.cos((midLat * Math.PI) / 180);
  const spanX = Math.max((maxLon - minLon) * kx, 1e-6), spanY = Math.max(maxLat - minLat, 1e-6);
  const scale = Math.min((WIDTH - 2 * PAD) / spanX, (HEIGHT - 2 * PAD) / spanY);
  const offX = (WIDTH - spanX * scale) / 2, offY = (HEIGHT - spanY * scale) / 2;
  const project = (lat, lon) => [offX + (lon - minLon) * kx * scale, HEIGHT - (offY + (lat - minLat) * scale)];
  const kmPerUnit = 111.32 / scale;  // degrees of latitude → km
  return { project, kmPerUnit };
}

function scaleBar(kmPerUnit) {
  const km = [0.5, 1, 2, 5, 10, 20].find(k => k / kmPerUnit > 80) ?? 20;
  const length = km / kmPerUnit;
  return svg("g", { class: "scale", transform: `translate(${PAD},${HEIGHT - 18})` },
    svg("line", { x1: 0, y1: 0, x2: length, y2: 0 }),
    svg("text", { x: length + 6, y: 4 }, `${km} ${t("km")}`));
}

export async function renderMap(view) {
  view.className = "map-view";
  const data = await api("/api/map");
  const all = [...data.elders, ...data.responders, ...data.centres, ...data.villages];
  if (!all.length) { view.append(h("p", { class: "muted" }, t("none"))); return; }
  const { project, kmPerUnit } = projection(all);
  const elderById = new Map(data.elders.map(e => [e.id, e]));
  const alertLayer = svg("g", { class: "alerts" });
  const drawing = svg("svg", { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, class: "map", role: "img", "aria-label": t("map_title") },
    svg("rect", { x: 0, y: 0, width: WIDTH, height: HEIGHT, class: "map-bg" }),
    svg("g", { class: "elders" }, data.elders.map(e => {
      const [x, y] = project(e.lat, e.lon);
      return svg("circle", { cx: x, cy: y, r: 3, class: "elder" }, svg("title", {}, e.name));
    })),
    svg("g", { class: "villages" }, data.villages.map(v => {
      const [x, y] = project(v.lat, v.lon);
      return svg("text", { x, y: y - 16, class: "village-label" }, v.name);
    })),
    svg("g", { class: "centres" }, data.centres.map(c => {
      const [x, y] = project(c.lat, c.lon);
      return svg("g", {}, svg("rect", { x: x - 6, y: y - 6, width: 12, height: 12, class: "centre" }, svg("title", {}, c.name)),
        svg("text", { x: x + 9, y: y + 4, class: "centre-label" }, c.name));
    })),
    svg("g", { class: "aides" }, data.responders.map(r => {
      const [x, y] = project(r.lat, r.lon);
      return svg("path", { d: `M${x},${y - 6} L${x + 5.5},${y + 4} L${x - 5.5},${y + 4} Z`, class: r.on_duty ? "aide" : "aide off" },
        svg("title", {}, `${r.name} · ${r.on_duty ? t("on_duty") : t("off_duty")}`));
    })),
    alertLayer,
    scaleBar(kmPerUnit),
  );

  function drawAlerts(list) {
    alertLayer.replaceChildren(...list.filter(a => a.status !== "resolved").map(a => {
      const elder = elderById.get(a.elder_id);
      if (!elder) return null;
      const [x, y] = project(elder.lat, elder.lon);
      const link = svg("a", { href: `#/alert/${a.id}`, class: `alert-mark p${a.priority}` },
        svg("circle", { cx: x, cy: y, r: 14, class: "pulse" }),
        svg("circle", { cx: x, cy: y, r: 7, class: "dot" }),
        svg("text", { x: x + 12, y: y - 10, class: "alert-label" }, `${a.code} ${a.elder}`),
        svg("title", {}, `${a.code} · ${a.elder} · ${label("kind", a.kind)}`));
      return link;
    }).filter(Boolean));
  }

  const legend = h("div", { class: "legend" },
    h("span", {}, h("i", { class: "lg elder" }), t("legend_elder")),
    h("span", {}, h("i", { class: "lg alert" }), t("legend_alert")),
    h("span", {}, h("i", { class: "lg aide" }), t("legend_aide")),
    h("span", {}, h("i", { class: "lg aide-off" }), t("legend_aide_off")),
    h("span", {}, h("i", { class: "lg centre" }), t("legend_centre")),
    h("span", { class: "muted" }, t("map_offline")));
  view.append(h("h2", {}, t("map_title")), legend, h("div", { class: "map-frame" }, drawing));
  drawAlerts(live.alerts);
  return onAlerts(drawAlerts);
}
