// What the elder's family texted (issue 20 item 2): GET /api/elders/{id}/messages on the elder's
// page — help words (with the alert they raised), replies, 退订 — newest first, never lost.

import { label, t } from "./i18n.js";
import { api, fmtDateTime, h } from "./util.js";

export async function familyMessagesCard(elderId) {
  let messages;
  try { messages = await api(`/api/elders/${elderId}/messages`); } catch { return null; }
  return h("section", { class: "card", id: "family-messages" }, h("h3", {}, t("family_messages")),
    messages.length
      ? h("table", { class: "grid" },
        h("thead", {}, h("tr", {}, ["time", "family_from", "family_text", "event"].map(c => h("th", {}, t(c))))),
        h("tbody", {}, messages.map(m => h("tr", {},
          h("td", { class: "mono" }, fmtDateTime(m.at)), h("td", { class: "mono" }, m.from_phone),
          h("td", { class: "family-text" }, m.body),
          h("td", {}, label("purpose", m.purpose), m.alert_id ? [" · ", h("a", { href: `#/alert/${m.alert_id}` }, `A${m.alert_id}`)] : null)))))
      : h("p", { class: "muted" }, t("family_none")));
}
