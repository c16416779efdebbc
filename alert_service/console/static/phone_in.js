// 代报警: an operator raises an alert for a caller (POST /api/alerts) — find the elder (name,
// code, village or a guardian's number), say what happened and who called, submit. Built to be
// done in seconds: the search box has the focus, the first result is one click (or Enter), the
// kinds and callers are buttons. A caller not in the registry: a village and an address.

import { currentLang } from "./i18n.js";
import { api, errorText, h } from "./util.js";

// This form's labels (kept here, beside the form, in both languages).
const TEXT = {
  zh: {
    title: "代报警（电话报警）", search: "搜索老人：姓名、编号、村或家属电话", no_match: "没有找到，可选“未登记来电人”",
    unregistered: "未登记来电人（按村和地址报警）", village: "村", address: "详细地址", chosen: "已选",
    kind: "发生了什么", caller: "来电人", caller_phone: "来电号码", note: "备注", submit: "报警",
    need_elder: "请先选择老人，或选择“未登记来电人”", open_alert: "查看警报", registered: "按老人报警",
    hint: "时限从现在（来电时）开始计时，派单与设备报警相同。",
  },
  en: {
    title: "Phone-in alert", search: "Find the elder: name, code, village or a guardian's number", no_match: "No match: choose “caller not in the registry”",
    unregistered: "Caller not in the registry (village and address)", village: "Village", address: "Address", chosen: "Chosen",
    kind: "What happened", caller: "Caller", caller_phone: "Caller's number", note: "Note", submit: "Raise alert",
    need_elder: "Choose an elder first, or “caller not in the registry”", open_alert: "Open the alert", registered: "For a registered elder",
    hint: "The 15-minute clock starts now (the call); the ladder is the same as a device alert's.",
  },
};
const KINDS = {
  zh: [["fall", "跌倒"], ["illness", "突发疾病"], ["fire", "火情/燃气"], ["missing", "走失"], ["other", "其他"]],
  en: [["fall", "Fall"], ["illness", "Sudden illness"], ["fire", "Fire / gas"], ["missing", "Missing"], ["other", "Other"]],
};
const CALLERS = {
  zh: [["elder", "老人本人"], ["relative", "家属"], ["neighbour", "邻居"], ["hotline", "12349热线"], ["other", "其他"]],
  en: [["elder", "The elder"], ["relative", "A relative"], ["neighbour", "A neighbour"], ["hotline", "Hotline 12349"], ["other", "Other"]],
};

function tx(key) { return TEXT[currentLang() === "en" ? "en" : "zh"][key]; }
function pairs(table) { return table[currentLang() === "en" ? "en" : "zh"]; }

function choiceGroup(name, options, checked) {
  return h("div", { class: "choices", role: "radiogroup" },
    options.map(([value, text]) => h("label", { class: "choice" },
      h("input", { type: "radio", name, value, checked: value === checked, required: true }), text)));
}

export async function renderPhoneIn(view, config) {
  let elder = null;  // the chosen elder {id, name, code, village}
  let searched = 0;
  const results = h("ul", { id: "phone-in-results", class: "results" });
  const chosen = h("p", { id: "phone-in-chosen", class: "chosen" });
  const search = h("input", { id: "phone-in-search", type: "search", placeholder: tx("search"), autocomplete: "off", autofocus: true });
  const villages = h("select", { name: "village_id" });
  const address = h("input", { name: "address", maxlength: 128 });
  const unregistered = h("input", { type: "checkbox", name: "unregistered" });
  const byPlace = h("fieldset", { class: "by-place", hidden: true },
    h("label", {}, tx("village"), villages), h("label", {}, tx("address"), address));
  const message = h("p", { id: "phone-in-message", role: "status" });

  function choose(row) {
    elder = row;
    chosen.textContent = `${tx("chosen")}：${row.name}（${row.code} · ${row.village}）`;
    results.replaceChildren();
  }

  async function find() {
    const q = search.value.trim();
    const mine = ++searched;
    if (!q) { results.replaceChildren(); return; }
    const rows = await api(`/api/elders?q=${encodeURIComponent(q)}&limit=10`);
    if (mine !== searched) return;  // a later keystroke's search is under way
    results.replaceChildren(...(rows.length ? rows.map(row =>
      h("li", {}, h("button", { type: "button", class: "result", dataset: { id: row.id }, onclick: () => choose(row) },
        `${row.name}（${row.code}）· ${row.village}`)))
      : [h("li", { class: "muted" }, tx("no_match"))]));
  }
  let timer = null;
  search.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(() => find().catch(() => {}), 150); });
  // Enter takes the first result (searching at once when the typing outran the search).
  search.addEventListener("keydown", async ev => {
    if (ev.key !== "Enter") return;
    ev.preventDefault();
    clearTimeout(timer);
    if (!results.querySelector("button.result")) await find().catch(() => {});
    results.querySelector("button.result")?.click();
  });
  unregistered.addEventListener("change", async () => {
    byPlace.hidden = !unregistered.checked;
    search.disabled = unregistered.checked;
    if (unregistered.checked && !villages.options.length) {
      const regions = await api("/api/regions");
      villages.replaceChildren(...regions.filter(r => r.level === "village")
        .map(r => h("option", { value: r.id }, `${r.name}（${r.code}）`)));
    }
  });

  const form = h("form", { id: "phone-in", class: "card" },
    h("h2", {}, tx("title")),
    h("p", { class: "muted" }, tx("hint")),
    h("label", {}, search), results, chosen,
    h("label", { class: "check" }, unregistered, tx("unregistered")), byPlace,
    h("fieldset", {}, h("legend", {}, tx("kind")), choiceGroup("kind", pairs(KINDS), null)),
    h("fieldset", {}, h("legend", {}, tx("caller")), choiceGroup("caller", pairs(CALLERS), null)),
    h("label", {}, tx("caller_phone"), h("input", { name: "caller_phone", type: "tel", maxlength: 20, pattern: "\\+?[0-9]{3,19}" })),
    h("label", {}, tx("note"), h("textarea", { name: "note", maxlength: 500, rows: 2 })),
    h("button", { type: "submit", class: "primary", disabled: !config?.can_act }, tx("submit")),
    message,
  );
  form.addEventListener("submit", async ev => {
    ev.preventDefault();
    const data = new FormData(form);
    const body = { kind: data.get("kind"), caller: data.get("caller"), note: data.get("note") || "" };
    if (data.get("caller_phone")) body.caller_phone = data.get("caller_phone");
    if (unregistered.checked) {
      body.village_id = Number(villages.value);
      body.address = address.value;
    } else if (elder) body.elder_id = elder.id;
    else { message.className = "error"; message.textContent = tx("need_elder"); return; }
    try {
      const out = await api("/api/alerts", { method: "POST", body });
      message.className = out.joined ? "warn" : "ok";
      message.replaceChildren(out.message, " ",
        h("a", { href: `#/alert/${out.alert.id}`, dataset: { code: out.alert.code } }, tx("open_alert")));
      form.reset();
      elder = null;
      chosen.textContent = "";
      byPlace.hidden = true;
      search.disabled = false;
    } catch (err) {
      message.className = "error";
      message.textContent = errorText(err);
    }
  });
  view.append(form);
  search.focus();
}
