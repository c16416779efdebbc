// DOM building, time formatting and the API client. Text always goes in as text nodes or
// attribute values, never as HTML, so whatever an elder's name or an SMS says stays inert.

import { currentLang, t } from "./i18n.js";

const SVG_NS = "http://www.w3.org/2000/svg";

function build(el, attrs, children) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.setAttribute("class", value);
    else if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key === "value" && "value" in el) el.value = value;
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** h("td", {class: "x"}, "text", otherNode) — an HTML element. */
export function h(tag, attrs, ...children) { return build(document.createElement(tag), attrs, children); }

/** An SVG element. */
export function svg(tag, attrs, ...children) { return build(document.createElementNS(SVG_NS, tag), attrs, children); }

export function clear(el) { while (el.firstChild) el.firstChild.remove(); return el; }

// --- time, always in the deployment's time zone -------------------------------------------

let timezone = "Asia/Shanghai";
export function setTimezone(zone) { timezone = zone || timezone; }

function formatter(options) {
  return new Intl.DateTimeFormat(currentLang() === "en" ? "en-GB" : "zh-CN", { timeZone: timezone, hour12: false, ...options });
}

/** 2026-11-23 10:02:07 in the deployment's zone (to the second: the timeline needs it). */
export function fmtDateTime(iso) {
  if (!iso) return "—";
  const parts = Object.fromEntries(
    formatter({ year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit" })
      .formatToParts(new Date(iso)).map(p => [p.type, p.value]));
  return `${parts.year}-${parts.month}-${parts.day} ${parts.hour}:${parts.minute}:${parts.second}`;
}

export function fmtTime(iso) {
  if (!iso) return "—";
  return formatter({ hour: "2-digit", minute: "2-digit", second: "2-digit" }).format(new Date(iso));
}

export function nowClock() { return formatter({ hour: "2-digit", minute: "2-digit", second: "2-digit" }).format(new Date()); }

/** Seconds left on the clock as m:ss; negative → "overdue m:ss". */
export function fmtLeft(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  const late = seconds < 0;
  const s = Math.abs(Math.trunc(seconds));
  const text = `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
  return late ? `${t("overdue")} ${text}` : text;
}

export function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  return fmtLeft(seconds);
}

// --- the API -------------------------------------------------------------------------------

export class ApiError extends Error {
  constructor(status, detail) {
    super(typeof detail === "string" ? detail : JSON.stringify(detail));
    this.status = status;
    this.detail = detail;
  }
}

const session = {
  get token() { return sessionStorage.getItem("anxin.token"); },
  set token(value) { value ? sessionStorage.setItem("anxin.token", value) : sessionStorage.removeItem("anxin.token"); },
};
export { session };

let onUnauthorised = () => {};
export function whenUnauthorised(handler) { onUnauthorised = handler; }

export async function api(path, { method = "GET", body, raw = false } = {}) {
  const headers = { Accept: "application/json" };
  if (session.token) headers.Authorization = `Bearer ${session.token}`;
  let payload;
  if (body instanceof URLSearchParams) payload = body;
  else if (body !== undefined) { headers["Content-Type"] = "application/json"; payload = JSON.stringify(body); }
  const res = await fetch(path, { method, headers, body: payload });
  if (res.status === 401 && session.token) { onUnauthorised(); throw new ApiError(401, t("session_expired")); }
  if (!res.ok) {
    let detail = res.statusText;
    try { detail = (await res.json()).detail ?? detail; } catch { /* not JSON */ }
    throw new ApiError(res.status, detail);
  }
  if (raw) return res;
  return res.status === 204 ? null : res.json();
}

/** A short message for an API error (FastAPI's 422 lists are shown per field by forms). */
export function errorText(err) {
  if (err instanceof ApiError && Array.isArray(err.detail)) {
    return err.detail.map(d => `${(d.loc || []).slice(-1)[0] ?? ""}: ${d.msg}`).join("; ");
  }
  return err instanceof ApiError && typeof err.detail === "string" ? err.detail : String(err.message || err);
}

/** A short note in the header's free space: it never lies over the page's text. */
export function toast(message, kind = "ok") {
  const el = h("div", { class: `toast ${kind}`, title: message }, message);
  (document.getElementById("toasts") ?? document.body).replaceChildren(el);
  setTimeout(() => el.remove(), kind === "bad" ? 8000 : 4000);
}
