// The month's care-visit rate on the figures page (GET /api/figures/visits): visited ÷ due per
// county, township and village, who was missed and why, and the .xlsx the county sends upward
// (GET /api/figures/visits.xlsx). The month defaults to the last one (the one reported).

import { label, t } from "./i18n.js";
import { api, clear, h } from "./util.js";

function pct(value) { return value === null || value === undefined ? "—" : `${(100 * value).toFixed(1)}%`; }

function lastMonth(timezone) {
  const parts = Object.fromEntries(new Intl.DateTimeFormat("en-CA", { timeZone: timezone, year: "numeric", month: "2-digit" })
    .formatToParts(new Date()).map(p => [p.type, Number(p.value)]));
  const index = parts.year * 12 + parts.month - 2;
  return `${Math.floor(index / 12)}-${String((index % 12) + 1).padStart(2, "0")}`;
}

const LEVELS = { county: 0, township: 1, village: 2 };

function rates(rows) {
  return h("table", { class: "grid", id: "visits-table" },
    h("thead", {}, h("tr", {}, ["region", "visits_level", "visits_due", "visits_done", "visits_rate", "visits_pending", "visits_missed"]
      .map((k, i) => h("th", { class: i > 1 ? "num" : "" }, t(k))))),
    h("tbody", {}, rows.map(r => h("tr", { class: r.level === "village" ? "" : "total", "data-code": r.code },
      h("td", {}, r.name), h("td", {}, label("level", r.level)), h("td", { class: "num" }, r.due),
      h("td", { class: "num" }, r.visited), h("td", { class: `num strong ${r.rate !== null && r.rate < 1 ? "late" : ""}` }, pct(r.rate)),
      h("td", { class: "num" }, r.pending), h("td", { class: "num" }, r.missed_count)))));
}

function missed(rows) {
  const villages = rows.filter(r => r.level === "village");
  const list = villages.flatMap(v => v.missed.map(m => ({ ...m, village: v.name })));
  if (!list.length) return h("p", { class: "muted", id: "visits-missed" }, t("visits_none_missed"));
  return h("table", { class: "grid", id: "visits-missed" },
    h("thead", {}, h("tr", {}, ["village", "code", "name", "visits_tier", "visits_period", "visits_reason", "visits_owner"].map(k => h("th", {}, t(k))))),
    h("tbody", {}, list.map(m => h("tr", {},
      h("td", {}, m.village), h("td", { class: "mono" }, m.elder_code), h("td", {}, m.elder_name),
      h("td", {}, label("visit_tier", m.tier)),
      h("td", {}, m.kind === "major_change" ? `${t("visits_major_change")} ${m.end}` : `${m.start} – ${m.end}`),
      h("td", { class: "late" }, label("visit_missed", m.reason)), h("td", {}, m.owner_name ?? "—")))));
}

async function download(month) {
  const res = await api(`/api/figures/visits.xlsx?month=${month}`, { raw: true });
  const link = h("a", { href: URL.createObjectURL(await res.blob()), download: `anxin-visits-${month}.xlsx` });
  document.body.append(link);
  link.click();
  link.remove();
}

export async function visitsSection(config) {
  const month = h("input", { type: "month", id: "visits-month", value: lastMonth(config.timezone) });
  const body = h("div", { id: "visits-body" });
  async function load() {
    const rows = await api(`/api/figures/visits?month=${month.value}`);
    rows.sort((a, b) => LEVELS[a.level] - LEVELS[b.level] || a.code.localeCompare(b.code));
    clear(body).append(
      rows.length ? rates(rows) : h("p", { class: "muted" }, t("no_figures")),
      missed(rows));
  }
  month.addEventListener("change", () => { if (month.value) load(); });
  await load();
  return h("section", { class: "card", id: "visits" },
    h("div", { class: "toolbar" }, h("h3", {}, t("visits_title")), month,
      h("button", { type: "button", id: "visits-xlsx", onclick: () => download(month.value) }, t("visits_xlsx"))),
    body,
    h("p", { class: "muted" }, t("visits_hint")));
}
