// Registry pages: elders, devices, aides, regions and centres, dead letters; create and edit
// through one form builder that shows the server's validation next to each field.

import { label, t, vocabulary } from "./i18n.js";
import { ApiError, api, errorText, fmtDateTime, h, toast } from "./util.js";
import { live } from "./live.js";
import { familyMessagesCard } from "./family.js";
import { visitStatusCard } from "./overdue.js";

// The civil-affairs categories (registry.columns.CATEGORY_ZH, in its order), then the risk flag.
const CATEGORIES = ["extreme_poverty", "low_income", "living_alone", "empty_nest", "left_behind", "advanced_age",
  "disabled", "semi_disabled", "dementia", "severe_disability", "family_planning_special"];
const FLAGS = [...CATEGORIES, "wanders"];

function grid(columns, rows, attrs = {}) {
  return h("table", { class: "grid", ...attrs },
    // "#name": a numeric column, right-aligned like its cells.
    h("thead", {}, h("tr", {}, columns.map(c => c.startsWith("#") ? h("th", { class: "num" }, t(c.slice(1))) : h("th", {}, t(c))))),
    h("tbody", {}, rows));
}

function yesNo(value) { return value ? "✓" : "—"; }

function options(pairs) { return pairs.map(([value, text]) => h("option", { value }, text)); }

// --- the form ------------------------------------------------------------------------------

function fieldInput(field, value) {
  const id = `f-${field.name}`;
  switch (field.type) {
    case "checkbox":
      return h("input", { type: "checkbox", id, name: field.name, checked: Boolean(value) });
    case "select":
      return h("select", { id, name: field.name, required: field.required, disabled: field.readonly },
        field.required ? null : h("option", { value: "" }, "—"),
        options(field.options).map(o => { if (String(o.value) === String(value ?? "")) o.selected = true; return o; }));
    case "phones":
      return h("textarea", { id, name: field.name, rows: 2, placeholder: t("guardian_hint") }, (value || []).join("\n"));
    default:
      return h("input", {
        id, name: field.name, type: field.type || "text", value: value ?? "", required: field.required,
        step: field.step, readonly: field.readonly, maxlength: field.maxlength, pattern: field.pattern,
      });
  }
}

function readField(form, field) {
  const el = form.elements[field.name];
  if (field.type === "checkbox") return el.checked;
  if (field.type === "phones") return el.value.split(/[\n,，;；]+/).map(s => s.trim()).filter(Boolean);
  if (field.type === "number") return el.value === "" ? null : Number(el.value);
  if (field.type === "select" && field.numeric) return el.value === "" ? null : Number(el.value);
  return el.value;
}

// Pydantic's messages are English and technical: say the same thing plainly.
const PLAIN = {
  string_pattern_mismatch: "err_format", missing: "err_required", string_too_short: "err_required",
  string_too_long: "err_too_long", greater_than_equal: "err_range", less_than_equal: "err_range",
  float_parsing: "err_number", int_parsing: "err_number", float_type: "err_number", int_type: "err_number",
};

function friendly(detail, field) {
  if (detail.type === "string_pattern_mismatch" && /phone/.test(field ?? "")) return t("err_phone");
  return PLAIN[detail.type] ? t(PLAIN[detail.type]) : detail.msg;
}

/** Checkboxes side by side under one legend (an elder's categories); each is its own field. */
function checkGroup(field, values, error) {
  return h("fieldset", { class: "checks", id: `f-${field.name}` }, h("legend", {}, t(field.label ?? field.name)),
    field.items.map(item => h("label", { class: "check" }, fieldInput({ name: item, type: "checkbox" }, values[item]), h("span", {}, t(item)))),
    error);
}

/** A modal form. `submit(data)` saves; a 422 puts each message under its field. */
function openForm({ title, fields, values = {}, submit }) {
  const dialog = h("dialog", { class: "form-dialog" });
  const errors = new Map();
  const general = h("p", { class: "error" });
  const form = h("form", { method: "dialog", class: "registry-form", novalidate: true },
    h("h3", {}, title),
    h("div", { class: "fields" }, fields.map(field => {
      const error = h("span", { class: "field-error" });
      errors.set(field.name, error);
      if (field.type === "group") {
        for (const item of field.items) errors.set(item, error);
        return checkGroup(field, values, error);
      }
      return h("label", { class: field.type === "checkbox" ? "check" : "" },
        field.type === "checkbox" ? null : h("span", {}, t(field.label ?? field.name)),
        fieldInput(field, values[field.name]),
        field.type === "checkbox" ? h("span", {}, t(field.label ?? field.name)) : null,
        error);
    })),
    general,
    h("div", { class: "buttons" },
      h("button", { type: "button", onclick: () => dialog.close() }, t("cancel")),
      h("button", { type: "submit", class: "primary" }, t("save"))),
  );
  form.addEventListener("submit", async ev => {
    ev.preventDefault();
    for (const el of errors.values()) el.textContent = "";
    general.textContent = "";
    const data = {};
    for (const field of fields) {
      if (field.type === "group") for (const item of field.items) data[item] = form.elements[item].checked;
      else if (!field.readonly || field.send) data[field.name] = readField(form, field);
    }
    try {
      await submit(data);
      dialog.close();
      toast(t("saved"));
    } catch (err) {
      if (err instanceof ApiError && Array.isArray(err.detail)) {
        for (const d of err.detail) {
          const name = (d.loc || []).find(part => errors.has(part));
          (errors.get(name) ?? general).append(`${friendly(d, name)} `);
        }
      } else general.textContent = errorText(err);
    }
  });
  dialog.append(form);
  dialog.addEventListener("close", () => dialog.remove());
  document.body.append(dialog);
  dialog.showModal();
  return dialog;
}

async function villageOptions() {
  const regions = await api("/api/regions");
  return regions.filter(r => r.level === "village").map(r => [r.id, `${r.name}（${r.code}）`]);
}

// --- elders --------------------------------------------------------------------------------

function elderFields(villages) {
  return [
    { name: "code", required: true, maxlength: 32 },
    { name: "name", required: true, maxlength: 32 },
    { name: "village_id", label: "village", type: "select", options: villages, required: true, numeric: true },
    { name: "address", maxlength: 128 },
    { name: "lat", type: "number", step: "any", required: true },
    { name: "lon", type: "number", step: "any", required: true },
    { name: "categories", type: "group", items: CATEGORIES },
    { name: "wanders", type: "checkbox" },
    { name: "guardian_phones", label: "guardians", type: "phones" },
    { name: "consent", type: "checkbox" },
    { name: "night_start", maxlength: 5 },
    { name: "night_end", maxlength: 5 },
    // A second place part of each year: all of lat, lon, from and to (MM-DD), or none.
    { name: "season_address", maxlength: 128 },
    { name: "season_lat", type: "number", step: "any" },
    { name: "season_lon", type: "number", step: "any" },
    { name: "season_start", maxlength: 5 },
    { name: "season_end", maxlength: 5 },
  ];
}

function flagBadges(elder) {
  return FLAGS.filter(f => elder[f]).map(f => h("span", { class: `flag flag-${f}` }, t(f)));
}

function deviceDots(devices) {
  return devices.map(d => h("span", { class: `dev ${d.online ? "on" : "off"}`, title: `${d.id} · ${d.online ? t("online") : t("offline")}` },
    label("device_kind", d.kind)));
}

export async function renderElders(view, config) {
  view.className = "registry-view";
  const villages = await villageOptions();
  const search = h("input", { type: "search", placeholder: t("search"), id: "elder-search" });
  const category = h("select", { id: "elder-category", onchange: () => load() },
    h("option", { value: "" }, t("all_categories")), options(FLAGS.map(f => [f, t(f)])));
  const body = h("div", {});
  async function load() {
    const only = category.value ? `&category=${category.value}` : "";
    const elders = await api(`/api/elders?q=${encodeURIComponent(search.value.trim())}${only}`);
    body.replaceChildren(grid(["code", "name", "village", "flags", "guardians", "devices", "#open_count"],
      elders.map(e => h("tr", { onclick: () => { location.hash = `#/elder/${e.id}`; } },
        h("td", { class: "mono" }, e.code), h("td", {}, h("a", { href: `#/elder/${e.id}` }, e.name)), h("td", {}, e.village),
        h("td", {}, flagBadges(e)), h("td", { class: "mono guardians" }, e.guardian_phones.map(p => h("div", {}, p))), h("td", {}, deviceDots(e.devices)),
        h("td", { class: "num" }, e.open_alerts || "")))));
  }
  let timer = null;
  search.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(load, 300); });
  view.append(
    h("div", { class: "toolbar" }, h("h2", {}, t("nav_elders")), search, category,
      config.can_act ? h("button", { type: "button", class: "primary", id: "add-elder", onclick: () => openForm({
        title: `${t("add")} · ${t("elder")}`, fields: elderFields(villages), values: { consent: true, night_start: "22:00", night_end: "06:00" },
        submit: async data => { const e = await api("/api/elders", { method: "POST", body: data }); location.hash = `#/elder/${e.id}`; },
      }) }, `+ ${t("add")}`) : null),
    body);
  await load();
}

export async function renderElder(view, elderId, config) {
  view.className = "registry-view";
  const elder = await api(`/api/elders/${elderId}`);
  const [villages, visits] = await Promise.all([villageOptions(), visitStatusCard(elderId)]);
  const family = await familyMessagesCard(elderId);
  const alerts = live.alerts.filter(a => a.elder_id === elderId);
  view.append(...[
    h("p", {}, h("a", { href: "#/elders" }, `← ${t("nav_elders")}`)),
    h("section", { class: "card" },
      h("div", { class: "toolbar" }, h("h2", {}, `${elder.name}（${elder.code}）`), flagBadges(elder),
        config.can_act ? h("button", { type: "button", id: "edit-elder", onclick: () => openForm({
          title: `${t("edit")} · ${elder.name}`, fields: elderFields(villages), values: elder,
          submit: async data => { await api(`/api/elders/${elderId}`, { method: "PUT", body: data }); location.reload(); },
        }) }, t("edit")) : null),
      h("dl", { class: "facts" },
        h("dt", {}, t("village")), h("dd", {}, elder.village),
        h("dt", {}, t("categories")), h("dd", { id: "elder-categories" }, elder.categories.join("、") || "—"),
        h("dt", {}, t("address")), h("dd", {}, elder.address || "—"),
        h("dt", {}, `${t("lat")} / ${t("lon")}`), h("dd", { class: "mono" }, `${elder.lat}, ${elder.lon}`),
        h("dt", {}, t("guardians")), h("dd", { class: "mono" }, elder.guardian_phones.join("，") || "—"),
        h("dt", {}, t("consent")), h("dd", {}, yesNo(elder.consent)),
        h("dt", {}, `${t("night_start")}–${t("night_end")}`), h("dd", {}, `${elder.night_start}–${elder.night_end}`),
        elder.season_start ? h("dt", {}, t("season_address")) : null,
        elder.season_start ? h("dd", { id: "elder-season" }, `${elder.season_address || "—"}（${elder.season_start}–${elder.season_end}）`) : null,
      )),
    visits,
    h("section", { class: "card" }, h("h3", {}, t("devices")),
      grid(["device_id", "kind", "online", "battery", "last_seen", "enabled"], elder.devices.map(d =>
        h("tr", {}, h("td", { class: "mono" }, d.id), h("td", {}, label("device_kind", d.kind)),
          h("td", {}, h("span", { class: `dev ${d.online ? "on" : "off"}` }, d.online ? t("online") : t("offline"))),
          h("td", { class: "num" }, d.battery ?? "—"), h("td", { class: "mono" }, fmtDateTime(d.last_seen_at)), h("td", {}, yesNo(d.enabled)))))),
    alerts.length ? h("section", { class: "card" }, h("h3", {}, t("nav_queue")),
      grid(["col_code", "col_kind", "col_raised", "col_status"], alerts.map(a =>
        h("tr", {}, h("td", {}, h("a", { href: `#/alert/${a.id}` }, a.code)), h("td", {}, label("kind", a.kind)),
          h("td", {}, fmtDateTime(a.raised_at)), h("td", {}, label("status", a.status)))))) : null,
    family,
  ].filter(Boolean));
}

// --- devices -------------------------------------------------------------------------------

export async function renderDevices(view, config) {
  view.className = "registry-view";
  const [health, elders] = await Promise.all([api("/api/device-health"), config.can_act ? api("/api/elders?limit=1000") : []]);
  const elderOptions = elders.map(e => [e.id, `${e.name}（${e.code} · ${e.village}）`]);
  const kinds = Object.entries(vocabulary("device_kind"));
  const troubleOnly = h("input", { type: "checkbox", id: "trouble-only" });
  const body = h("div", {});
  const fields = (editing) => [
    { name: "id", label: "device_id", required: true, readonly: editing, maxlength: 64, pattern: "[A-Za-z0-9_-]{1,64}" },
    { name: "kind", type: "select", options: kinds, required: true },
    { name: "elder_id", label: "elder", type: "select", options: elderOptions, required: true, numeric: true },
    { name: "heartbeat_interval_s", label: "heartbeat", type: "number", required: true },
    { name: "enabled", type: "checkbox" },
    ...(editing ? [] : [{ name: "password", label: "device_password", type: "password" }]),
  ];
  async function load() {
    const devices = await api(`/api/devices?trouble_only=${troubleOnly.checked}`);
    body.replaceChildren(grid(["device_id", "kind", "elder", "village", "online", "#battery", "#rssi", "last_seen", "trouble", "enabled", ""],
      devices.map(d => h("tr", { class: d.trouble.length ? "trouble" : "" },
        h("td", { class: "mono" }, d.id), h("td", {}, label("device_kind", d.kind)),
        h("td", {}, h("a", { href: `#/elder/${d.elder_id}` }, d.elder)), h("td", {}, d.village),
        h("td", {}, h("span", { class: `dev ${d.online ? "on" : "off"}` }, d.online ? t("online") : t("offline"))),
        h("td", { class: `num ${d.battery !== null && d.battery < 20 ? "late" : ""}` }, d.battery ?? "—"),
        h("td", { class: "num" }, d.rssi ?? "—"), h("td", { class: "mono" }, fmtDateTime(d.last_seen_at)),
        h("td", {}, d.trouble.map(k => h("span", { class: "badge amber" }, label("kind", k)))),
        h("td", {}, yesNo(d.enabled)),
        h("td", {}, config.can_act ? h("button", { type: "button", class: "small", onclick: () => openForm({
          title: `${t("edit")} · ${d.id}`, fields: fields(true), values: d,
          submit: async data => { delete data.id; await api(`/api/devices/${encodeURIComponent(d.id)}`, { method: "PUT", body: data }); await load(); },
        }) }, t("edit")) : null)))));
  }
  troubleOnly.addEventListener("change", load);
  view.append(
    h("section", { class: "card" }, h("h3", {}, t("health")),
      grid(["township", "#total", "#online", "#offline", "#low_battery", "#disabled_devices"], health.map(r =>
        h("tr", {}, h("td", {}, r.township), h("td", { class: "num" }, r.devices), h("td", { class: "num" }, r.online),
          h("td", { class: "num" }, r.offline), h("td", { class: "num" }, r.low_battery), h("td", { class: "num" }, r.disabled))))),
    h("div", { class: "toolbar" }, h("h2", {}, t("nav_devices")),
      h("label", { class: "check" }, troubleOnly, t("trouble")),
      config.can_act ? h("button", { type: "button", class: "primary", onclick: () => openForm({
        title: `${t("add")} · ${t("devices")}`, fields: fields(false), values: { heartbeat_interval_s: 60, enabled: true, kind: "sos_button" },
        submit: async data => {
          if (!data.password) delete data.password;
          const created = await api("/api/devices", { method: "POST", body: data });
          await load();
          window.alert(`${t("new_password")}: ${created.password}`);
        },
      }) }, `+ ${t("add")}`) : null),
    body);
  await load();
}

// --- aides and centres' duty phones --------------------------------------------------------

export async function renderResponders(view, config) {
  view.className = "registry-view";
  const [villages, centres] = await Promise.all([villageOptions(), api("/api/centres")]);
  const body = h("div", {});
  const fields = [
    { name: "kind", type: "select", options: Object.entries(vocabulary("role")), required: true },
    { name: "name", required: true, maxlength: 32 },
    { name: "phone", required: true, maxlength: 20 },
    { name: "village_id", label: "village", type: "select", options: villages, numeric: true },
    { name: "centre_id", label: "centre", type: "select", options: centres.map(c => [c.id, c.name]), numeric: true },
    { name: "lat", type: "number", step: "any", required: true },
    { name: "lon", type: "number", step: "any", required: true },
    { name: "travel_mode", type: "select", options: Object.entries(vocabulary("travel")), required: true },
    { name: "setup_minutes", type: "number", step: "any" },
    { name: "on_duty", type: "checkbox" },
    { name: "lang", type: "select", options: [["zh", "中文"], ["en", "English"]], required: true },
  ];
  async function load() {
    const responders = await api("/api/responders");
    body.replaceChildren(grid(["name", "role", "place", "phone", "on_duty", "travel_mode", "#dispatches_today", "#accepted_today", ""],
      responders.map(r => h("tr", { class: r.on_duty ? "" : "muted" },
        h("td", {}, r.name), h("td", {}, label("role", r.kind)), h("td", {}, r.place), h("td", { class: "mono" }, r.phone),
        h("td", {}, h("span", { class: `dev ${r.on_duty ? "on" : "off"}` }, r.on_duty ? t("on_duty") : t("off_duty"))),
        h("td", {}, label("travel", r.travel_mode)), h("td", { class: "num" }, r.dispatches_today), h("td", { class: "num" }, r.accepted_today),
        h("td", {}, config.can_act ? h("button", { type: "button", class: "small", onclick: () => openForm({
          title: `${t("edit")} · ${r.name}`, fields, values: r,
          submit: async data => { await api(`/api/responders/${r.id}`, { method: "PUT", body: data }); await load(); },
        }) }, t("edit")) : null)))));
  }
  view.append(
    h("div", { class: "toolbar" }, h("h2", {}, t("nav_responders")),
      config.can_act ? h("button", { type: "button", class: "primary", onclick: () => openForm({
        title: `${t("add")} · ${t("nav_responders")}`, fields, values: { kind: "aide", travel_mode: "ebike", on_duty: true, lang: "zh", setup_minutes: 2 },
        submit: async data => { await api("/api/responders", { method: "POST", body: data }); await load(); },
      }) }, `+ ${t("add")}`) : null),
    body);
  await load();
}

// --- regions and centres -------------------------------------------------------------------

export async function renderRegions(view, config) {
  view.className = "registry-view";
  const [regions, centres] = await Promise.all([api("/api/regions"), api("/api/centres")]);
  const byId = new Map(regions.map(r => [r.id, r]));
  const parents = regions.filter(r => r.level !== "village").map(r => [r.id, `${r.name}（${label("level", r.level)}）`]);
  const regionFields = (editing) => [
    { name: "code", required: true, maxlength: 32 },
    { name: "name", label: "region_name", required: true, maxlength: 32 },
    { name: "level", type: "select", options: [["township", label("level", "township")], ["village", label("level", "village")]], required: true, readonly: editing, send: true },
    { name: "parent_id", label: "parent", type: "select", options: parents, required: true, numeric: true },
    { name: "lat", type: "number", step: "any" },
    { name: "lon", type: "number", step: "any" },
    { name: "response_minutes", type: "number" },
  ];
  const centreFields = [
    { name: "region_id", label: "region", type: "select", options: parents, required: true, numeric: true },
    { name: "name", label: "region_name", required: true, maxlength: 64 },
    { name: "duty_phone", required: true, maxlength: 20 },
    { name: "lat", type: "number", step: "any", required: true },
    { name: "lon", type: "number", step: "any", required: true },
    { name: "has_vehicle", type: "checkbox" },
  ];
  const reload = () => { location.reload(); };
  const edit = config.can_edit_regions;
  // Parents before children, children indented: the four-level network at a glance.
  const ordered = [];
  const walk = (parentId, depth) => regions.filter(r => r.parent_id === parentId).forEach(r => { ordered.push([r, depth]); walk(r.id, depth + 1); });
  regions.filter(r => !byId.has(r.parent_id)).forEach(r => { ordered.push([r, 0]); walk(r.id, 1); });
  view.append(
    h("div", { class: "columns" },
      h("section", { class: "card" },
        h("div", { class: "toolbar" }, h("h3", {}, t("regions")),
          edit ? h("button", { type: "button", class: "primary", onclick: () => openForm({
            title: `${t("add")} · ${t("regions")}`, fields: regionFields(false), values: { level: "village", response_minutes: 15 },
            submit: async data => { await api("/api/regions", { method: "POST", body: data }); reload(); },
          }) }, `+ ${t("add")}`) : null),
        grid(["region_name", "code", "level", "#response_minutes", "#elders", ""], ordered.map(([r, depth]) =>
          h("tr", {}, h("td", { style: `padding-left:${0.6 + depth * 1.4}em` }, r.name), h("td", { class: "mono" }, r.code),
            h("td", {}, label("level", r.level)), h("td", { class: "num" }, r.response_minutes), h("td", { class: "num" }, r.level === "village" ? r.elders : ""),
            h("td", {}, edit && r.level !== "county" ? h("button", { type: "button", class: "small", onclick: () => openForm({
              title: `${t("edit")} · ${r.name}`, fields: regionFields(true), values: r,
              submit: async data => { await api(`/api/regions/${r.id}`, { method: "PUT", body: data }); reload(); },
            }) }, t("edit")) : null,
            edit ? h("button", { type: "button", class: "small", onclick: () => openLadder(r) }, t("ladder")) : null))))),
      h("section", { class: "card" },
        h("div", { class: "toolbar" }, h("h3", {}, t("centres")),
          edit ? h("button", { type: "button", class: "primary", onclick: () => openForm({
            title: `${t("add")} · ${t("centres")}`, fields: centreFields, values: { has_vehicle: true },
            submit: async data => { await api("/api/centres", { method: "POST", body: data }); reload(); },
          }) }, `+ ${t("add")}`) : null),
        grid(["region_name", "region", "level", "duty_phone", "has_vehicle", ""], centres.map(c =>
          h("tr", {}, h("td", {}, c.name), h("td", {}, c.region), h("td", {}, label("level", c.level)), h("td", { class: "mono" }, c.duty_phone),
            h("td", {}, yesNo(c.has_vehicle)),
            h("td", {}, edit ? h("button", { type: "button", class: "small", onclick: () => openForm({
              title: `${t("edit")} · ${c.name}`, fields: centreFields, values: c,
              submit: async data => { await api(`/api/centres/${c.id}`, { method: "PUT", body: data }); reload(); },
            }) }, t("edit")) : null))))),
    ),
  );
}

// A region's ladder: its own settings (empty = inherited), the effective value as placeholder.
const LADDER_FIELDS = ["accept_timeout_s", "max_aides", "at_risk_s", "centre_answer_s", "reminder_grace_s", "voice_after_s"];

async function openLadder(r) {
  const ladder = await api(`/api/regions/${r.id}/ladder`);
  const dialog = openForm({
    title: `${t("ladder")} · ${r.name}`,
    fields: [...LADDER_FIELDS.map(name => ({ name, type: "number", step: "any" })),
      { name: "notify_guardians", type: "checkbox" }],
    values: { ...ladder.own, notify_guardians: ladder.effective.notify_guardians },
    submit: async data => {
      const own = Object.fromEntries(Object.entries(data).filter(([, v]) => v !== null));
      if (own.notify_guardians === ladder.effective.notify_guardians && !("notify_guardians" in ladder.own)) delete own.notify_guardians;
      await api(`/api/regions/${r.id}/ladder`, { method: "PUT", body: own });
    },
  });
  for (const name of LADDER_FIELDS) dialog.querySelector(`[name=${name}]`).placeholder = String(ladder.effective[name]);
  dialog.querySelector("form h3").after(h("p", { class: "muted" }, t("ladder_hint")));
}

// --- dead letters --------------------------------------------------------------------------

export async function renderDeadLetters(view) {
  view.className = "registry-view";
  const letters = await api("/api/dead-letters");
  view.append(h("h2", {}, t("dead_letters")),
    letters.length ? grid(["received_at", "device_id", "reason", "topic", "detail", "payload"], letters.map(d =>
      h("tr", {}, h("td", { class: "mono" }, fmtDateTime(d.received_at)), h("td", { class: "mono" }, d.device_id ?? "—"),
        h("td", {}, h("span", { class: "badge amber" }, d.reason)), h("td", { class: "mono small" }, d.topic),
        h("td", {}, d.detail), h("td", { class: "mono small payload" }, d.payload))))
      : h("p", { class: "muted" }, t("none")));
}
