// Monthly figures (GET /api/figures): share on scene within 15 minutes per township as a bar
// chart (inline SVG), the table behind it with the county's totals, devices online per
// township, and a CSV export of the table.

import { currentLang, t } from "./i18n.js";
import { api, fmtDuration, h, svg } from "./util.js";
import { coverageSection } from "./coverage.js";
import { visitsSection } from "./visits.js";

const COLOURS = ["#1a73e8", "#e8710a", "#188038", "#a142f4", "#d93025", "#007b83", "#9e6a03"];
const W = 900, H = 300, LEFT = 48, BOTTOM = 40, TOP = 16;
const MONTHS_SHOWN = 12;

function pct(value) { return value === null || value === undefined ? "—" : `${(100 * value).toFixed(1)}%`; }

/** The last `count` months up to this one, as YYYY-MM in the deployment's time zone. */
function monthRange(timezone, count) {
  const parts = Object.fromEntries(new Intl.DateTimeFormat("en-CA", { timeZone: timezone, year: "numeric", month: "2-digit" })
    .formatToParts(new Date()).map(p => [p.type, Number(p.value)]));
  const index = parts.year * 12 + parts.month - 1;
  const month = i => `${Math.floor(i / 12)}-${String((i % 12) + 1).padStart(2, "0")}`;
  return [month(index - count + 1), month(index)];
}

function chart(rows, townships, months) {
  const plotW = W - LEFT - 16, plotH = H - TOP - BOTTOM;
  const groupW = plotW / Math.max(months.length, 1);
  const barW = Math.min(36, (groupW - 12) / Math.max(townships.length, 1));
  const y = v => TOP + plotH * (1 - v);
  const byKey = new Map(rows.map(r => [`${r.region_id}/${r.month}`, r]));
  return svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "aria-label": t("figures_title") },
    [0, 0.25, 0.5, 0.75, 1].map(v => svg("g", { class: "gridline" },
      svg("line", { x1: LEFT, x2: W - 16, y1: y(v), y2: y(v) }),
      svg("text", { x: LEFT - 6, y: y(v) + 4, class: "axis", "text-anchor": "end" }, `${v * 100}%`))),
    months.map((month, mi) => svg("g", {},
      svg("text", { x: LEFT + groupW * (mi + 0.5), y: H - BOTTOM + 18, class: "axis", "text-anchor": "middle" }, month),
      townships.map(([id, name], ti) => {
        const r = byKey.get(`${id}/${month}`);
        const share = r?.on_scene_in_time_share;
        if (share === null || share === undefined) return null;
        const x = LEFT + groupW * mi + (groupW - barW * townships.length) / 2 + ti * barW;
        return svg("g", {},
          svg("rect", { x: x + 1, y: y(share), width: barW - 2, height: plotH * share, fill: COLOURS[ti % COLOURS.length] },
            svg("title", {}, `${name} ${month}: ${pct(share)} (${r.on_scene_in_time}/${r.decided})`)),
          svg("text", { x: x + barW / 2, y: y(share) - 4, class: "bar-label", "text-anchor": "middle" }, Math.round(100 * share)));
      }))),
    svg("line", { x1: LEFT, x2: W - 16, y1: y(0), y2: y(0), class: "baseline" }),
  );
}

const COLUMNS = [
  ["region", r => r.region], ["month", r => r.month], ["alerts", r => r.alerts], ["urgent", r => r.urgent],
  ["decided", r => r.decided], ["met", r => r.on_scene_in_time], ["breached", r => r.breaches],
  ["compliance", r => r.on_scene_in_time_share], ["accept_median", r => r.accept_p50_s], ["accept_p90", r => r.accept_p90_s],
  ["on_scene_median", r => r.on_scene_p50_s], ["on_scene_p90", r => r.on_scene_p90_s],
];

/** A spreadsheet runs a cell starting with = + - @ as a formula: keep such text as text. */
function csvCell(value) {
  let text = value === null || value === undefined ? "" : String(value);
  if (/^[=+\-@]/.test(text)) text = `'${text}`;
  return /[",\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

function exportCsv(rows, from, to) {
  const header = ["region", "level", "month", "alerts", "urgent", "decided", "on_scene_in_time", "breaches",
    "on_scene_in_time_pct", "accept_p50_s", "accept_p90_s", "on_scene_p50_s", "on_scene_p90_s"];
  const round = v => (v === null || v === undefined ? "" : Math.round(v));
  const lines = [header.join(",")].concat(rows.map(r => [
    r.region, r.level, r.month, r.alerts, r.urgent, r.decided, r.on_scene_in_time, r.breaches,
    r.on_scene_in_time_share === null ? "" : (100 * r.on_scene_in_time_share).toFixed(1),
    round(r.accept_p50_s), round(r.accept_p90_s), round(r.on_scene_p50_s), round(r.on_scene_p90_s),
  ].map(csvCell).join(",")));
  // A BOM so that Excel, which most county offices open CSVs with, reads UTF-8 Chinese.
  const blob = new Blob(["\ufeff" + lines.join("\r\n") + "\r\n"], { type: "text/csv;charset=utf-8" });
  const link = h("a", { href: URL.createObjectURL(blob), download: `anxin-figures-${from}-${to}.csv` });
  document.body.append(link);
  link.click();
  link.remove();
}

export async function renderFigures(view, config) {
  view.className = "figures-view";
  const [from, to] = monthRange(config.timezone, MONTHS_SHOWN);
  const [rows, devices, coverage, visits] = await Promise.all([
    api(`/api/figures?month_from=${from}&month_to=${to}`),
    api("/api/device-health"),
    coverageSection(),
    visitsSection(config),
  ]);
  const townshipRows = rows.filter(r => r.level === "township");
  const townships = [...new Map(townshipRows.map(r => [r.region_id, r.region])).entries()];
  const months = [...new Set(townshipRows.map(r => r.month))].sort();
  // Month by month; within a month the townships, then the county's total.
  const ordered = [...rows].sort((a, b) => a.month.localeCompare(b.month) || (a.level === "county") - (b.level === "county") || a.region.localeCompare(b.region, currentLang()));
  view.append(
    h("div", { class: "toolbar" }, h("h2", {}, t("figures_title")), h("span", { class: "muted" }, `${from} – ${to}`),
      h("button", { type: "button", id: "export-csv", class: "primary", onclick: () => exportCsv(ordered, from, to) }, t("export_csv"))),
    townshipRows.length
      ? h("section", { class: "card" },
          h("div", { class: "legend" }, townships.map(([, name], i) => h("span", {}, h("i", { class: "lg", style: `background:${COLOURS[i % COLOURS.length]}` }), name))),
          chart(townshipRows, townships, months),
          h("p", { class: "muted" }, t("compliance_hint")))
      : h("p", { class: "muted" }, t("no_figures")),
    h("section", { class: "card" },
      h("table", { class: "grid", id: "figures-table" },
        h("thead", {}, h("tr", {}, COLUMNS.map(([c], i) => h("th", { class: i > 1 ? "num" : "" }, t(c))))),
        h("tbody", {}, ordered.map(r => h("tr", { class: r.level === "county" ? "total" : "" },
          COLUMNS.map(([c, get], i) => {
            const value = get(r);
            const text = c === "compliance" ? pct(value) : c.includes("median") || c.includes("p90") ? fmtDuration(value) : value;
            return h("td", { class: i > 1 ? `num ${c === "compliance" ? "strong" : ""} ${c === "breached" && value ? "late" : ""}` : i === 1 ? "mono" : "" }, text);
          })))))),
    h("section", { class: "card" }, h("h3", {}, t("devices_online")),
      h("table", { class: "grid" },
        h("thead", {}, h("tr", {}, ["township", "total", "online", "offline", "low_battery", "devices_online"].map((c, i) => h("th", { class: i > 0 ? "num" : "" }, t(c))))),
        h("tbody", {}, devices.map(d => h("tr", {},
          h("td", {}, d.township), h("td", { class: "num" }, d.devices), h("td", { class: "num" }, d.online),
          h("td", { class: "num" }, d.offline), h("td", { class: "num" }, d.low_battery),
          h("td", { class: "num strong" }, d.devices - d.disabled ? pct(d.online / (d.devices - d.disabled)) : "—")))))),
    coverage,
    visits,
  );
}
