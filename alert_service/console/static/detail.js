// One alert: the clock, the flags, the actions, the timeline to the second, the responder
// ranking with ETAs and every SMS with its delivery status. Refreshed when the push says the
// alert changed.

import { label, t, vocabulary } from "./i18n.js";
import { api, errorText, fmtDateTime, fmtLeft, fmtTime, h, toast } from "./util.js";
import { live, onAlerts } from "./live.js";

const OUTCOMES = ["handled", "false_alarm", "hospital", "elder_cancelled"];
const FORM_IDS = ["accept-responder", "reassign-responder", "outcome", "note", "verified"];

function secondsLeftNow(alert, fetchedAt) {
  if (alert.seconds_left === null) return null;
  return alert.seconds_left - (performance.now() - fetchedAt) / 1000;
}

function names(alert) {
  const byId = new Map();
  for (const c of alert.ranking) byId.set(c.responder_id, c.name);
  for (const a of alert.attempts) byId.set(a.responder_id, a.responder);
  return byId;
}

function actorText(actor, responderNames) {
  const [kind, id] = actor.split(":", 2);
  if (kind === "responder") return `${responderNames.get(Number(id)) ?? id}（${label("role", "aide")}）`;
  if (kind === "operator") return `${id}`;
  if (kind === "device") return id;
  return label("actor", actor);
}

function detailText(entry, responderNames) {
  const d = { ...entry.detail };
  const parts = [];
  if (d.responder_id !== undefined) { parts.push(responderNames.get(d.responder_id) ?? `#${d.responder_id}`); delete d.responder_id; }
  if (d.role) { parts.push(label("role", d.role)); delete d.role; }
  if (d.kind) { parts.push(label("kind", d.kind)); delete d.kind; }
  if (d.outcome) { parts.push(label("outcome", d.outcome)); delete d.outcome; }
  if (d.priority) { parts.push(`P${d.priority}`); delete d.priority; }
  if (d.met !== undefined) { parts.push(d.met ? "✓ 15′" : "✗ 15′"); delete d.met; }
  if (d.reason) { parts.push(label("reason", d.reason)); delete d.reason; }
  if (d.since && d.until) {  // the platform's gap: 25 分钟 (10:02–10:27)
    parts.push(`${d.minutes} ${t("minutes")} (${fmtTime(d.since).slice(0, 5)}–${fmtTime(d.until).slice(0, 5)})`);
    delete d.minutes; delete d.since; delete d.until;
  }
  for (const [k, v] of Object.entries(d)) if (v !== "" && v !== null) parts.push(`${label("detail_key", k)}: ${v}`);
  return parts.join(" · ");
}

function table(columns, rows) {
  return h("table", { class: "grid" }, h("thead", {}, h("tr", {}, columns.map(c => h("th", {}, t(c))))), h("tbody", {}, rows));
}

/** The ranking as the table shows it: soonest first by the ETA it shows (the ladder's own order
 * puts aides before centres, and same-village aides first among near ties). */
function byEta(alert) {
  return [...alert.ranking].sort((a, b) => a.eta_minutes - b.eta_minutes);
}

/** Only an SOS is pressed: another kind reported again (a device offline again, say). */
function actionLabel(alert, action) {
  return label("action", action === "triggered_again" && alert.kind !== "sos" ? "reported_again" : action);
}

function selectResponder(alert, id) {
  return h("select", { id, required: true },
    h("option", { value: "" }, t("choose")),
    byEta(alert).map((c, i) => h("option", { value: c.responder_id },
      `${i + 1}. ${c.name} · ${label("role", c.kind)} · ${c.eta_minutes} ${t("minutes")}`)));
}

function actionsPanel(alert, config, refresh) {
  if (alert.status === "resolved") return null;
  if (!config.can_act) return h("p", { class: "muted" }, t("viewer_note"));
  async function act(path, body, done) {
    try {
      await api(`/api/alerts/${alert.id}/${path}`, { method: "POST", body });
      toast(done ?? t("done"));
      await refresh();
    } catch (err) { toast(errorText(err), "bad"); }
  }
  const acceptSel = selectResponder(alert, "accept-responder");
  const reassignSel = selectResponder(alert, "reassign-responder");
  const outcome = h("select", { id: "outcome", required: true },
    h("option", { value: "" }, t("choose")),
    OUTCOMES.map(o => h("option", { value: o }, vocabulary("outcome")[o])));
  const note = h("textarea", { id: "note", maxlength: 1000, rows: 2, placeholder: t("note") });
  const verified = h("input", { type: "checkbox", id: "verified" });
  return h("section", { class: "card actions" },
    h("h3", {}, t("actions")),
    h("div", { class: "action-row" },
    h("form", { class: "inline", onsubmit: ev => { ev.preventDefault(); if (acceptSel.value) act("accept", { responder_id: Number(acceptSel.value) }); } },
      h("label", {}, t("accept_for"), acceptSel), h("button", { type: "submit", id: "do-accept" }, t("accept_for").split("（")[0].split(" (")[0])),
    h("form", { class: "inline", onsubmit: ev => { ev.preventDefault(); if (reassignSel.value) act("reassign", { responder_id: Number(reassignSel.value) }); } },
      h("label", {}, t("reassign"), reassignSel), h("button", { type: "submit", id: "do-reassign" }, t("reassign"))),
    alert.status !== "on_scene"
      ? h("div", { class: "inline" }, h("button", { type: "button", id: "do-on-scene", onclick: () => act("on-scene") }, t("record_on_scene")))
      : null),
    h("form", { class: "resolve", id: "resolve-form", onsubmit: ev => {
      ev.preventDefault();
      if (!outcome.value) { outcome.focus(); return; }
      if (!window.confirm(t("confirm_resolve"))) return;
      act("resolve", { outcome: outcome.value, note: note.value, verified_by_phone: verified.checked });
    } },
      h("label", {}, t("outcome"), outcome),
      h("label", { class: "grow" }, t("note"), note),
      h("label", { class: "check" }, verified, t("verified_by_phone")),
      h("button", { type: "submit", class: "primary", id: "do-resolve" }, t("resolve"))),
  );
}

export async function renderAlert(view, alertId, config) {
  view.className = "detail-view";
  let fetchedAt = 0;
  let alert = null;
  let signature = "";

  async function refresh() {
    alert = await api(`/api/alerts/${alertId}`);
    fetchedAt = performance.now();
    draw();
  }

  function draw() {
    const responderNames = names(alert);
    const left = secondsLeftNow(alert, fetchedAt);
    const state = alert.breached || (left !== null && left < 0) ? "breached" : alert.at_risk ? "at-risk" : "";
    const asked = new Map(alert.attempts.map(a => [a.responder_id, a]));
    // A push may redraw while the operator is typing a note: keep what they entered.
    const kept = FORM_IDS.map(id => [id, document.getElementById(id)]).filter(([, el]) => el)
      .map(([id, el]) => [id, el.type === "checkbox" ? el.checked : el.value]);
    view.replaceChildren(
      h("p", {}, h("a", { href: "#/queue" }, `← ${t("back")}`)),
      h("section", { class: `card head p${alert.priority} ${state}` },
        h("div", { class: "head-main" },
          h("span", { class: `prio p${alert.priority}` }, `P${alert.priority}`),
          h("h2", { id: "alert-title" }, `${alert.code} · ${label("kind", alert.kind)}`),
          h("span", { class: "status" }, label("status", alert.status)),
          alert.call_120 ? h("span", { class: "badge red big", id: "call-120" }, `☎ ${t("call_120")}`) : null,
          alert.cancel_requested ? h("span", { class: "badge grey" }, t("cancel_requested")) : null,
        ),
        h("div", { class: "head-clock" }, h("span", { class: "countdown big", id: "detail-countdown" }, alert.status === "resolved" ? label("outcome", alert.outcome) : fmtLeft(left))),
        h("dl", { class: "facts" },
          h("dt", {}, t("col_elder")), h("dd", {}, h("a", { href: `#/elder/${alert.elder_id}` }, alert.elder)),
          h("dt", {}, t("col_village")), h("dd", {}, alert.village),
          h("dt", {}, t("raised_at")), h("dd", {}, fmtDateTime(alert.raised_at)),
          h("dt", {}, t("respond_by")), h("dd", {}, fmtDateTime(alert.respond_by)),
          h("dt", {}, t("col_count")), h("dd", {}, alert.trigger_count),
          h("dt", {}, t("col_taker")), h("dd", {}, alert.accepted_by ?? "—"),
          alert.outcome ? [h("dt", {}, t("outcome")), h("dd", { id: "outcome-value" }, label("outcome", alert.outcome))] : null,
        ),
      ),
      ...[actionsPanel(alert, config, refresh)].filter(Boolean),
      h("div", { class: "columns" },
        h("section", { class: "card", id: "timeline" }, h("h3", {}, t("timeline")),
          table(["time", "who", "event", "detail"], alert.timeline.map(e =>
            h("tr", { class: `tl-${e.action}` }, h("td", { class: "mono" }, fmtDateTime(e.at)), h("td", {}, actorText(e.actor, responderNames)),
              h("td", {}, actionLabel(alert, e.action)), h("td", {}, detailText(e, responderNames)))))),
        h("section", { class: "card", id: "ranking" }, h("h3", {}, t("ranking")),
          table(["rank", "name", "role", "distance", "eta", "answer"], byEta(alert).map((c, i) => {
            const attempt = asked.get(c.responder_id);
            return h("tr", { dataset: { responder: c.responder_id } }, h("td", {}, i + 1), h("td", {}, c.name), h("td", {}, label("role", c.kind)),
              h("td", { class: "num" }, `${c.distance_km} ${t("km")}`), h("td", { class: "num" }, `${c.eta_minutes} ${t("minutes")}`),
              h("td", {}, attempt ? label("answer", attempt.answer) : ""));
          }))),
      ),
      h("section", { class: "card", id: "sms" }, h("h3", {}, t("sms")),
        table(["time", "direction", "phone", "purpose", "col_status", "body"], alert.sms.map(m =>
          h("tr", { class: `sms-${m.status}` }, h("td", { class: "mono" }, fmtDateTime(m.created_at)),
            h("td", {}, m.direction === "in" ? t("sms_in") : t("sms_out")),
            h("td", { class: "mono" }, m.direction === "in" ? m.from_phone : m.to_phone),
            h("td", {}, m.purpose === "pressed_again" && alert.kind !== "sos" ? actionLabel(alert, "triggered_again") : label("purpose", m.purpose)),
            h("td", {}, label("sms_status", m.status)),
            h("td", { class: "sms-body" }, m.body))))),
    );
    for (const [id, value] of kept) {
      const el = document.getElementById(id);
      if (el && el.type === "checkbox") el.checked = value; else if (el) el.value = value;
    }
  }

  await refresh();
  const stop = onAlerts(list => {
    const mine = list.find(a => a.id === alertId);
    if (!mine) return;
    const next = JSON.stringify({ ...mine, seconds_left: null });
    if (signature && next !== signature) refresh().catch(() => {});
    signature = next;
  });
  const mine = live.alerts.find(a => a.id === alertId);
  if (mine) signature = JSON.stringify({ ...mine, seconds_left: null });
  const ticker = setInterval(() => {
    const el = document.getElementById("detail-countdown");
    if (el && alert && alert.status !== "resolved") {
      const left = fmtLeft(secondsLeftNow(alert, fetchedAt));
      el.replaceChildren(left, ...(live.connected ? [] : [h("small", { class: "stale-mark" }, t("stale"))]));
    }
  }, 250);
  return () => { stop(); clearInterval(ticker); };
}
