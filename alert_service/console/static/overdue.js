// The queue's second tab, 逾期探访 (GET /api/visits/overdue): elders in the operator's region
// whose care visit is overdue — apart from the emergencies, longest overdue first. And the
// visit status on an elder's page (GET /api/elders/{id}/visits).

import { label, t } from "./i18n.js";
import { api, clear, fmtDateTime, h } from "./util.js";

export function overdueTable(rows) {
  if (!rows.length) return h("p", { class: "muted empty", id: "overdue-empty" }, t("overdue_none"));
  return h("table", { class: "grid", id: "overdue" },
    h("thead", {}, h("tr", {}, ["code", "name", "village", "visits_tier", "visits_owner", "overdue_last", "overdue_due", "overdue_days"]
      .map(k => h("th", { class: k === "overdue_days" ? "num" : "" }, t(k))))),
    h("tbody", {}, rows.map(r => h("tr", { dataset: { elder: r.elder_id }, onclick: () => { location.hash = `#/elder/${r.elder_id}`; } },
      h("td", { class: "mono" }, h("a", { href: `#/elder/${r.elder_id}` }, r.elder_code)), h("td", {}, r.elder_name),
      h("td", {}, r.village_name), h("td", {}, label("visit_tier", r.tier)), h("td", {}, r.owner_name ?? "—"),
      h("td", { class: "mono" }, r.last_visit ?? "—"),
      h("td", { class: "mono" }, r.due_date, r.major_change ? h("span", { class: "badge amber" }, t("overdue_major")) : null),
      h("td", { class: "num late" }, r.days_overdue)))));
}

/** The tab's body, and how many are overdue (for the tab's label). */
export async function loadOverdue(body) {
  const rows = await api("/api/visits/overdue");
  clear(body).append(overdueTable(rows), h("p", { class: "muted" }, t("overdue_hint")));
  return rows.length;
}

/** The elder page's card: last visit, this period's due date or visit, overdue or not. */
export async function visitStatusCard(elderId) {
  let s;
  try { s = await api(`/api/elders/${elderId}/visits`); } catch { return null; }
  const facts = [
    [t("visits_tier"), label("visit_tier", s.tier)],
    [t("visit_last"), s.last_visit ?? "—"],
    s.visited_this_period
      ? [t("visit_done_period"), `${s.visited_this_period}（${s.period_start} – ${s.period_end}）`]
      : [t("visit_next_due"), s.due_by ?? "—"],
    s.major_change_due_by ? [t("visit_major_due"), fmtDateTime(s.major_change_due_by)] : null,
  ].filter(Boolean);
  const state = s.overdue
    ? h("span", { class: "badge red", id: "visit-overdue" }, s.overdue_since ? `${t("visit_overdue")} · ${t("visit_overdue_since")} ${s.overdue_since}` : t("visit_overdue"))
    : h("span", { class: "badge grey", id: "visit-overdue" }, t("visit_on_time"));
  return h("section", { class: "card", id: "elder-visits" },
    h("div", { class: "toolbar" }, h("h3", {}, t("visit_status")), state),
    h("dl", { class: "facts" }, facts.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])));
}
