// The console's entry: login, the routes inside the page, the header.

import { currentLang, label, setLang, t, translateShell } from "./i18n.js";
import { api, clear, errorText, h, nowClock, session, setTimezone, whenUnauthorised } from "./util.js";
import { connect, disconnect, unlockAudio } from "./live.js";
import { renderQueue } from "./queue.js";
import { renderAlert } from "./detail.js";
import { renderDeadLetters, renderDevices, renderElder, renderElders, renderRegions, renderResponders } from "./registry.js";
import { renderMap } from "./map.js";
import { renderFigures } from "./figures.js";
import { renderPhoneIn } from "./phone_in.js";

export const state = { config: null };

const ROUTES = [
  [/^#\/queue$/, () => renderQueue],
  [/^#\/phone-in$/, () => view => renderPhoneIn(view, state.config)],
  [/^#\/alert\/(\d+)$/, m => view => renderAlert(view, Number(m[1]), state.config)],
  [/^#\/elders$/, () => view => renderElders(view, state.config)],
  [/^#\/elder\/(\d+)$/, m => view => renderElder(view, Number(m[1]), state.config)],
  [/^#\/devices$/, () => view => renderDevices(view, state.config)],
  [/^#\/responders$/, () => view => renderResponders(view, state.config)],
  [/^#\/regions$/, () => view => renderRegions(view, state.config)],
  [/^#\/dead-letters$/, () => renderDeadLetters],
  [/^#\/map$/, () => renderMap],
  [/^#\/figures$/, () => view => renderFigures(view, state.config)],
];

let cleanup = null;
let routed = 0;  // which route() call is the latest

async function route() {
  if (!state.config) return;
  const mine = ++routed;
  const hash = location.hash || "#/queue";
  let render = null;
  for (const [pattern, make] of ROUTES) {
    const m = hash.match(pattern);
    if (m) { render = make(m); break; }
  }
  if (!render) { location.hash = "#/queue"; return; }
  for (const link of document.querySelectorAll("#nav a")) {
    link.classList.toggle("active", hash.startsWith(`#/${link.dataset.route}`) || (link.dataset.route === "queue" && hash.startsWith("#/alert")));
  }
  if (cleanup) { cleanup(); cleanup = null; }
  // Each route renders into a page of its own: a slower render started before (a detail
  // still fetching when the operator moved on) then draws into a page no longer shown.
  const view = h("div", {});
  document.getElementById("view").replaceChildren(view);
  try {
    const result = await render(view);
    if (typeof result === "function") {
      if (mine === routed) cleanup = result; else result();
    }
  } catch (err) {
    view.append(h("p", { class: "error" }, errorText(err)));
  }
}

function showLogin(message = "") {
  disconnect();
  state.config = null;
  session.token = null;
  document.getElementById("nav").hidden = true;
  document.getElementById("logout").hidden = true;
  document.getElementById("live").hidden = true;
  document.getElementById("who").textContent = "";
  document.getElementById("banner").hidden = true;
  const view = clear(document.getElementById("view"));
  const error = h("p", { class: "error", id: "login-error" }, message);
  const form = h("form", { id: "login", class: "card login" },
    h("h2", {}, t("login_title")),
    h("label", {}, t("username"), h("input", { name: "username", autocomplete: "username", required: true, autofocus: true })),
    h("label", {}, t("password"), h("input", { name: "password", type: "password", autocomplete: "current-password", required: true })),
    h("button", { type: "submit", class: "primary" }, t("login")),
    error,
  );
  form.addEventListener("submit", async ev => {
    ev.preventDefault();
    unlockAudio();  // the click is the user gesture browsers want before playing a sound
    try {
      const token = await api("/api/auth/token", { method: "POST", body: new URLSearchParams(new FormData(form)) });
      session.token = token.access_token;
      await start();
    } catch (err) {
      error.textContent = err.status === 429 ? t("locked") : err.status === 401 ? t("wrong_password") : errorText(err);
    }
  });
  view.append(form);
}

async function start() {
  state.config = await api("/api/console/config");
  setTimezone(state.config.timezone);
  document.getElementById("nav").hidden = false;
  document.getElementById("logout").hidden = false;
  document.getElementById("who").textContent =
    `${state.config.display_name} · ${label("op_role", state.config.role)}`;
  connect(() => showLogin(t("session_expired")));
  if (!location.hash || location.hash === "#/login") location.hash = "#/queue";
  await route();
}

function switchLanguage() {
  setLang(currentLang() === "en" ? "zh" : "en");
  document.getElementById("lang").textContent = currentLang() === "en" ? "中文" : "EN";
  translateShell();
  if (state.config) {
    document.getElementById("who").textContent = `${state.config.display_name} · ${label("op_role", state.config.role)}`;
    route();
  } else showLogin();
}

function init() {
  setLang(currentLang());
  translateShell();
  document.getElementById("lang").textContent = currentLang() === "en" ? "中文" : "EN";
  document.getElementById("lang").addEventListener("click", switchLanguage);
  document.getElementById("logout").addEventListener("click", () => { location.hash = ""; showLogin(); });
  whenUnauthorised(() => showLogin(t("session_expired")));
  window.addEventListener("hashchange", route);
  setInterval(() => { document.getElementById("clock").textContent = nowClock(); }, 1000);
  if (session.token) start().catch(() => showLogin()); else showLogin();
}

init();
