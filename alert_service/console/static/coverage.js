// Coverage on the figures page (GET /api/figures/coverage): the elders no on-duty aide can
// reach within their region's response minutes, the villages with no aide on duty, and the
// warnings of the last 24 hours (an aide's 下班 that left such a gap).

import { t } from "./i18n.js";
import { api, fmtDateTime, h } from "./util.js";

function eta(minutes) { return minutes === null || minutes === undefined ? "—" : minutes.toFixed(1); }

export async function coverageSection() {
  const c = await api("/api/figures/coverage");
  const warnings = c.warnings.map(w => h("li", { class: "late" },
    `${fmtDateTime(w.at)} · ${w.detail.responder} ${t("coverage_went_off")}` +
    (w.detail.villages_without_aide.length ? ` · ${t("coverage_no_aide")}：${w.detail.villages_without_aide.join("、")}` : "") +
    (w.detail.uncovered.length ? ` · ${t("coverage_uncovered")} ${w.detail.uncovered.length}` : "")));
  return h("section", { class: "card", id: "coverage" },
    h("h3", {}, t("coverage_title")),
    warnings.length ? h("ul", { id: "coverage-warnings", class: "banner" }, warnings) : null,
    h("p", { id: "coverage-summary", class: c.uncovered.length ? "late strong" : "muted" },
      `${c.elders} ${t("coverage_elders")} · ${t("coverage_uncovered")} ${c.uncovered.length}`),
    c.uncovered.length
      ? h("table", { class: "grid", id: "coverage-table" },
          h("thead", {}, h("tr", {}, ["code", "name", "township", "village", "coverage_fastest", "coverage_eta", "coverage_limit"]
            .map((k, i) => h("th", { class: i > 4 ? "num" : "" }, t(k))))),
          h("tbody", {}, c.uncovered.map(e => h("tr", {},
            h("td", { class: "mono" }, e.code), h("td", {}, e.name), h("td", {}, e.township),
            h("td", {}, e.seasonal ? `${e.village}（${t("coverage_seasonal")}）` : e.village),
            h("td", {}, e.aide_name ?? t("coverage_none_on_duty")),
            h("td", { class: "num late" }, eta(e.eta_minutes)), h("td", { class: "num" }, e.respond_minutes)))))
      : h("p", { class: "muted" }, t("coverage_all_reached")),
    h("p", { id: "coverage-villages" }, `${t("coverage_no_aide")}：`,
      c.villages_without_aide.length
        ? c.villages_without_aide.map(v => `${v.township} ${v.village}（${v.elders}）`).join("、")
        : "—"),
    h("p", { class: "muted" }, t("coverage_hint")));
}
