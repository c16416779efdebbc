// The live alert list, pushed by the server (Server-Sent Events; the page never polls), the
// banner and the sound for a new emergency.

import { fmtLeft, fmtTime, h, session, clear, api } from "./util.js";
import { label, t } from "./i18n.js";

export const live = {
  alerts: [],          // the latest list from the server
  receivedAt: 0,       // when it arrived (performance.now()), to run the countdown locally
  confirmedAt: null,   // when the server last confirmed it (a Date): a push or its "alive" beat
  connected: false,
  listeners: new Set(),
};

let source = null;
let seen = null;         // alert ids already shown (null until the first list: no banner for old ones)
let audio = null;
let retryTimer = null;
let lastSignature = "";
let bannerIds = [];  // the alerts the banner is about

/** Seconds left on an alert's clock now, counted down from the server's figure. */
export function secondsLeft(alert) {
  if (alert.seconds_left === null || alert.seconds_left === undefined) return null;
  return alert.seconds_left - (performance.now() - live.receivedAt) / 1000;
}

export function onAlerts(listener) { live.listeners.add(listener); return () => live.listeners.delete(listener); }

/** Audio needs a user gesture first: the login click unlocks it. */
export function unlockAudio() {
  try {
    audio = audio || new (window.AudioContext || window.webkitAudioContext)();
    if (audio.state === "suspended") audio.resume();
  } catch { audio = null; }
}

/** Three short beeps, made on the spot (no sound file to download). */
export function beep() {
  window.anxinBeeps = (window.anxinBeeps || 0) + 1;  // lets the browser tests see it happened
  if (!audio) unlockAudio();
  if (!audio) return;
  const start = audio.currentTime + 0.05;
  for (let i = 0; i < 3; i++) {
    const osc = audio.createOscillator();
    const gain = audio.createGain();
    osc.type = "square";
    osc.frequency.value = 880;
    gain.gain.setValueAtTime(0.0001, start + i * 0.35);
    gain.gain.exponentialRampToValueAtTime(0.25, start + i * 0.35 + 0.02);
    gain.gain.exponentialRampToValueAtTime(0.0001, start + i * 0.35 + 0.25);
    osc.connect(gain).connect(audio.destination);
    osc.start(start + i * 0.35);
    osc.stop(start + i * 0.35 + 0.3);
  }
}

function showBanner(fresh) {
  const banner = document.getElementById("banner");
  bannerIds = fresh.map(a => a.id);
  clear(banner);
  banner.append(
    h("strong", {}, `⚠ ${t("new_p1")}`),
    ...fresh.map(a => h("a", { class: "banner-alert", href: `#/alert/${a.id}` },
      `${a.code} · ${a.elder} · ${a.village} · ${label("kind", a.kind)}${a.call_120 ? " · " + t("call_120") : ""}`)),
    h("button", { type: "button", class: "banner-dismiss", onclick: () => { banner.hidden = true; } }, t("dismiss")),
  );
  banner.hidden = false;
}

/** The server is gone: say so, and since when the screen shows old data (the queue greys). */
function showConnectionLost() {
  const el = document.getElementById("connection-lost");
  const when = live.confirmedAt ? fmtTime(live.confirmedAt.toISOString()) : "—";
  el.textContent = `⚠ ${t("connection_lost").replace("{time}", when)}`;
  el.hidden = false;
  document.body.classList.add("stale");
}

function confirmed() {
  live.confirmedAt = new Date();
  document.getElementById("connection-lost").hidden = true;
  document.body.classList.remove("stale");
}

function receive(list) {
  live.alerts = list;
  live.receivedAt = performance.now();
  confirmed();
  const open = list.filter(a => a.status !== "resolved");
  if (seen === null) {
    seen = new Set(list.map(a => a.id));
  } else {
    const fresh = open.filter(a => a.priority === 1 && !seen.has(a.id));
    list.forEach(a => seen.add(a.id));
    if (fresh.length) { showBanner(fresh); beep(); }
  }
  // The banner goes once someone has taken (or closed) every alert it is about.
  const waiting = new Set(open.filter(a => a.status === "raised" || a.status === "dispatching").map(a => a.id));
  if (bannerIds.length && !bannerIds.some(id => waiting.has(id))) {
    document.getElementById("banner").hidden = true;
    bannerIds = [];
  }
  document.title = open.length ? `(${open.length}) 安心 Anxin` : "安心 Anxin · 值班台";
  // The server pushes every second while clocks run; views redraw only when something other
  // than the time left changed (a redraw under the operator's pointer would eat clicks).
  const signature = JSON.stringify(list.map(({ seconds_left, ...rest }) => rest));
  if (signature === lastSignature) return;
  lastSignature = signature;
  for (const listener of live.listeners) listener(list);
}

function setLive(connected) {
  live.connected = connected;
  const badge = document.getElementById("live");
  badge.hidden = false;
  badge.textContent = connected ? `● ${t("live")}` : t("reconnecting");
  badge.className = connected ? "live on" : "live off";
  // The banner stays until fresh data arrives, not merely a connection.
  if (!connected) showConnectionLost();
}

function open(onExpired) {
  if (source) source.close();
  clearTimeout(retryTimer);
  source = new EventSource(`/api/alerts-stream?token=${encodeURIComponent(session.token)}`);
  source.addEventListener("open", () => setLive(true));
  source.addEventListener("alerts", ev => { setLive(true); receive(JSON.parse(ev.data)); });
  source.addEventListener("alive", () => { if (live.connected) confirmed(); });
  source.addEventListener("error", () => {
    setLive(false);
    if (source && source.readyState === EventSource.CLOSED) {
      // Closed for good (the browser retries a dropped stream by itself, not a refused one):
      // the session expired (401), or the server is still away — then try again, and again.
      const retry = () => {
        retryTimer = setTimeout(async () => {
          try { await api("/api/console/config"); open(onExpired); }
          catch (err) { if (err.status === 401) onExpired(); else retry(); }
        }, 3000);
      };
      retry();
    }
  });
}

export function connect(onExpired) {
  disconnect();
  open(onExpired);
}

export function disconnect() {
  if (source) source.close();
  source = null;
  seen = null;
  lastSignature = "";
  live.connected = false;
  live.confirmedAt = null;
  clearTimeout(retryTimer);
  const lost = document.getElementById("connection-lost");
  if (lost) lost.hidden = true;
  document.body.classList.remove("stale");
}

export { fmtLeft };
