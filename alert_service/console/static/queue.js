// The live queue: open alerts, most urgent first, with a countdown that runs in the page.

import { label, t } from "./i18n.js";
import { fmtDateTime, fmtLeft, h } from "./util.js";
import { live, onAlerts, secondsLeft } from "./live.js";
import { loadOverdue } from "./overdue.js";

// Symbols the fonts the Makefile installs have (DejaVu, Noto CJK): ⌛ had none and showed a box.
const ANSWER_MARK = { pending: "…", accepted: "✓", declined: "✗", timed_out: "◷", failed: "✗", superseded: "–", withdrawn: "↷" };
const AT_RISK_SECONDS = 5 * 60;

function rowClass(alert, left) {
  const classes = [`p${alert.priority}`, `status-${alert.status}`];
  if (alert.breached || (left !== null && left < 0)) classes.push("breached");
  else if (alert.at_risk || (left !== null && left < AT_RISK_SECONDS)) classes.push("at-risk");
  return classes.join(" ");
}

/** The countdown, marked stale while the server is away (it still counts to the deadline). */
function countdown(left) {
  return live.connected ? [fmtLeft(left)] : [fmtLeft(left), h("small", { class: "stale-mark" }, t("stale"))];
}

function askedCell(alert) {
  if (!alert.asked?.length) return "—";
  return alert.asked.map(a =>
    h("span", { class: `asked answer-${a.answer}`, title: `${label("role", a.role)} · ${label("answer", a.answer)}` },
      `${a.responder}${ANSWER_MARK[a.answer] ?? ""}`));
}

function sortKey(alert) {
  const left = secondsLeft(alert);
  return [left === null ? 1 : 0, left ?? 0, alert.priority];
}

function byUrgency(a, b) {
  const ka = sortKey(a), kb = sortKey(b);
  for (let i = 0; i < ka.length; i++) if (ka[i] !== kb[i]) return ka[i] - kb[i];
  return 0;
}

function alertRow(alert) {
  const left = secondsLeft(alert);
  const flags = [];
  if (alert.call_120) flags.push(h("span", { class: "badge red" }, t("call_120")));
  if (alert.cancel_requested) flags.push(h("span", { class: "badge grey" }, t("cancel_requested")));
  return h("tr", { class: rowClass(alert, left), dataset: { id: alert.id }, onclick: () => { location.hash = `#/alert/${alert.id}`; } },
    h("td", {}, h("span", { class: `prio p${alert.priority}` }, `P${alert.priority}`)),
    h("td", { class: "countdown", dataset: { id: alert.id } }, countdown(left)),
    h("td", {}, h("a", { href: `#/alert/${alert.id}` }, alert.code)),
    h("td", { class: "elder" }, alert.elder),
    h("td", {}, alert.village),
    h("td", {}, label("kind", alert.kind), " ", flags),
    h("td", { class: "num" }, alert.trigger_count),
    h("td", {}, askedCell(alert)),
    h("td", {}, alert.accepted_by ?? "—"),
    h("td", {}, label("status", alert.status)),
  );
}

function head(...columns) {
  return h("thead", {}, h("tr", {}, columns.map(c => h("th", { class: c === "col_count" ? "num" : "" }, t(c)))));
}

export function renderQueue(view) {
  view.className = "queue-view";
  const summary = h("div", { class: "summary" });
  const body = h("tbody", { id: "queue-rows" });
  const empty = h("p", { class: "muted empty" }, t("no_open"));
  const closedBody = h("tbody", {});
  // Two tabs: the emergencies, and the overdue care visits (never mixed with them).
  const alertsPane = h("div", { id: "alerts-pane" });
  const overduePane = h("div", { id: "overdue-pane", hidden: true });
  const overdueCount = h("span", { class: "badge grey", id: "overdue-count" }, "…");
  const alertsTab = h("button", { type: "button", class: "tab active", id: "tab-alerts" }, t("tab_alerts"));
  const overdueTab = h("button", { type: "button", class: "tab", id: "tab-overdue" }, t("tab_overdue"), overdueCount);
  async function refreshOverdue() {
    try { overdueCount.textContent = await loadOverdue(overduePane); } catch { overdueCount.textContent = "?"; }
  }
  function show(overdue) {
    alertsPane.hidden = overdue;
    overduePane.hidden = !overdue;
    alertsTab.classList.toggle("active", !overdue);
    overdueTab.classList.toggle("active", overdue);
    if (overdue) refreshOverdue();
  }
  alertsTab.addEventListener("click", () => show(false));
  overdueTab.addEventListener("click", () => show(true));
  refreshOverdue();
  view.append(h("div", { class: "tabs", role: "tablist" }, alertsTab, overdueTab), alertsPane, overduePane);
  alertsPane.append(
    summary,
    h("table", { class: "queue", id: "queue" },
      head("col_priority", "col_left", "col_code", "col_elder", "col_village", "col_kind", "col_count", "col_asked", "col_taker", "col_status"),
      body),
    empty,
    h("p", { class: "muted" }, t("queue_hint")),
    h("details", { class: "closed" },
      h("summary", {}, t("recent_closed")),
      h("table", { class: "queue closed" },
        head("col_code", "col_elder", "col_village", "col_kind", "col_raised", "col_outcome", "col_taker"), closedBody)),
  );

  function draw(list) {
    const open = list.filter(a => a.status !== "resolved").sort(byUrgency);
    body.replaceChildren(...open.map(alertRow));
    empty.hidden = open.length > 0;
    const atRisk = open.filter(a => a.at_risk && !a.breached).length;
    const breached = open.filter(a => a.breached).length;
    summary.replaceChildren(
      h("div", { class: "stat" }, h("b", {}, open.length), t("open_alerts")),
      h("div", { class: "stat p1" }, h("b", {}, open.filter(a => a.priority === 1).length), t("p1_open")),
      h("div", { class: "stat risk" }, h("b", {}, atRisk), t("at_risk")),
      h("div", { class: "stat late" }, h("b", {}, breached), t("breached")),
    );
    closedBody.replaceChildren(...list.filter(a => a.status === "resolved").slice(0, 30).map(a =>
      h("tr", { onclick: () => { location.hash = `#/alert/${a.id}`; } },
        h("td", {}, h("a", { href: `#/alert/${a.id}` }, a.code)), h("td", {}, a.elder), h("td", {}, a.village),
        h("td", {}, label("kind", a.kind)), h("td", {}, fmtDateTime(a.raised_at)),
        h("td", {}, label("outcome", a.outcome)), h("td", {}, a.accepted_by ?? "—"))));
  }

  // Between pushes only the countdown text changes, computed in the page from the last push.
  function tick() {
    const byId = new Map(live.alerts.map(a => [String(a.id), a]));
    for (const cell of body.querySelectorAll("td.countdown")) {
      const alert = byId.get(cell.dataset.id);
      if (!alert) continue;
      const left = secondsLeft(alert);
      cell.replaceChildren(...countdown(left));
      cell.parentElement.className = rowClass(alert, left);
    }
  }

  draw(live.alerts);
  const stop = onAlerts(draw);
  const ticker = setInterval(tick, 250);
  return () => { stop(); clearInterval(ticker); };
}
