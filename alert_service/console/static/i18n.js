// Simplified Chinese by default, English on request. Every label the console shows is here.

const ZH = {
  brand_sub: "15分钟应急响应 · 值班台",
  nav_queue: "实时警报", nav_map: "地图", nav_elders: "老人", nav_devices: "设备",
  nav_responders: "助老员", nav_regions: "地区与中心", nav_dead: "异常消息", nav_figures: "统计",
  logout: "退出", login_title: "值班员登录", username: "用户名", password: "密码", login: "登录",
  wrong_password: "用户名或密码错误", locked: "尝试次数过多，账号已暂时锁定，请稍后再试",
  session_expired: "登录已过期，请重新登录", live: "实时", reconnecting: "重新连接中…",
  connection_lost: "与服务器的连接已断开，显示的是 {time} 的数据", stale: "未更新", region_name: "名称",
  new_p1: "新的紧急警报", dismiss: "知道了", open_alert: "查看",
  open_alerts: "未结束警报", at_risk: "有超时风险", breached: "已超时", p1_open: "紧急(P1)",
  queue_hint: "按15分钟时限剩余时间排序，最紧急的在最上面。", no_open: "目前没有未结束的警报。",
  recent_closed: "最近已结束",
  col_priority: "级别", col_code: "编号", col_left: "剩余时间", col_elder: "老人", col_village: "村",
  col_kind: "类型", col_count: "次数", col_asked: "已通知", col_taker: "接单人", col_status: "状态",
  col_raised: "报警时间", col_outcome: "结果",
  overdue: "超时", call_120: "需拨打120", cancel_requested: "老人请求取消",
  back: "返回", elder_record: "老人档案", raised_at: "报警时间", respond_by: "应到场时间",
  actions: "操作", accept_for: "代助老员接单（电话确认）", reassign: "改派给", record_on_scene: "记录已到场",
  resolve: "结束警报", outcome: "处理结果", note: "备注", verified_by_phone: "已电话核实（视为到场）",
  confirm_resolve: "确认结束此警报？", done: "已完成", choose: "请选择…", viewer_note: "只读账号，不能操作。",
  timeline: "时间线", ranking: "助老员排序（预计到达）", sms: "短信", time: "时间", who: "执行者",
  event: "事件", detail: "详情", rank: "序", name: "姓名", role: "类别", distance: "距离", eta: "预计到达",
  source: "依据", answer: "回复", direction: "方向", phone: "号码", purpose: "用途", body: "内容",
  sms_out: "发出", sms_in: "收到", minutes: "分钟", km: "公里", none: "无",
  // registry
  add: "新增", edit: "编辑", save: "保存", cancel: "取消", search: "搜索姓名或编号", saved: "已保存",
  code: "编号", village: "村", address: "地址", lat: "纬度", lon: "经度", flags: "风险标记",
  guardians: "监护人电话", devices: "设备", consent: "同意通知监护人", night_start: "夜间开始",
  night_end: "夜间结束", open_count: "未结束警报", living_alone: "独居", empty_nest: "空巢",
  left_behind: "留守", disabled: "失能", advanced_age: "高龄", wanders: "走失风险",
  categories: "类别", extreme_poverty: "特困", low_income: "低保", semi_disabled: "半失能", dementia: "失智",
  severe_disability: "重残", family_planning_special: "计划生育特殊家庭", all_categories: "全部类别",
  guardian_hint: "每行一个号码，格式 +86…",
  device_id: "设备号", kind: "类型", elder: "老人", online: "在线", offline: "离线", battery: "电量",
  rssi: "信号", last_seen: "最后在线", trouble: "故障", enabled: "启用", heartbeat: "心跳间隔(秒)",
  device_password: "设备密码（留空自动生成）", new_password: "设备密码（只显示这一次）",
  health: "各乡镇设备状况", total: "总数", low_battery: "电量低", disabled_devices: "停用",
  on_duty: "在岗", off_duty: "休息", travel_mode: "出行方式", setup_minutes: "准备时间(分)",
  dispatches_today: "今日派单", accepted_today: "今日接单", place: "所属", lang: "短信语言",
  centre: "服务中心", regions: "地区", centres: "服务中心", level: "级别", parent: "上级",
  response_minutes: "响应时限(分)", elders: "老人数", duty_phone: "值班电话", has_vehicle: "有车",
  ladder: "响应梯次", accept_timeout_s: "每位助老员等待(秒)", max_aides: "最多通知助老员(人)",
  at_risk_s: "转乡镇中心(秒，自报警起)", centre_answer_s: "乡镇中心等待(秒)", reminder_grace_s: "提醒宽限(秒)",
  notify_guardians: "通知监护人", voice_after_s: "短信未回复后打电话(秒)", ladder_hint: "留空则沿用上级设置；只影响此后新报的警报。",
  region: "地区",
  dead_letters: "异常设备消息", received_at: "收到时间", topic: "主题", reason: "原因", payload: "内容",
  // map
  map_title: "辖区地图", legend_elder: "老人", legend_alert: "未结束警报", legend_aide: "在岗助老员",
  legend_aide_off: "休息的助老员", legend_centre: "服务中心", map_offline: "离线绘制（无需网络）",
  // figures
  figures_title: "15分钟响应达标情况", compliance: "达标率", alerts: "警报数", met: "按时到场",
  accept_median: "接单用时(中位)", on_scene_median: "到场用时(中位)", month: "月份", township: "乡镇",
  export_csv: "导出 CSV", no_figures: "暂无数据。", devices_online: "设备在线率",
  compliance_hint: "达标率 = 15分钟内到场 ÷ 已有结果的紧急警报（P1/P2）。", urgent: "紧急(P1/P2)", decided: "已有结果",
  accept_p90: "接单用时(P90)", on_scene_p90: "到场用时(P90)",
  coverage_title: "覆盖情况：15分钟内无人可到的老人", coverage_elders: "位老人", coverage_uncovered: "在岗助老员无法按时到达",
  coverage_fastest: "最快的在岗助老员", coverage_eta: "预计到达(分)", coverage_limit: "时限(分)", coverage_seasonal: "季节住址",
  coverage_none_on_duty: "无人在岗", coverage_all_reached: "每位老人都有在岗助老员能按时到达。", coverage_no_aide: "无在岗助老员的村",
  coverage_went_off: "下班", coverage_hint: "按派单的同一估算：直线距离 × 绕行系数 ÷ 出行速度 + 准备时间（有导入的行程时间时用导入的）。",
  err_format: "格式不正确", err_required: "必填", err_too_long: "太长", err_range: "超出范围", err_number: "应为数字",
  err_phone: "应为 +86 开头的手机号，例如 +8613800000000",
};

const EN = {
  brand_sub: "15-minute response · operator console",
  nav_queue: "Live alerts", nav_map: "Map", nav_elders: "Elders", nav_devices: "Devices",
  nav_responders: "Aides", nav_regions: "Regions & centres", nav_dead: "Dead letters", nav_figures: "Figures",
  logout: "Log out", login_title: "Operator login", username: "Username", password: "Password", login: "Log in",
  wrong_password: "Wrong username or password", locked: "Too many failed attempts; the account is locked for a while",
  session_expired: "Your session has expired; please log in again", live: "live", reconnecting: "reconnecting…",
  connection_lost: "Connection to the server lost: showing the data of {time}", stale: "stale", region_name: "Name",
  new_p1: "New emergency", dismiss: "Dismiss", open_alert: "Open",
  open_alerts: "Open alerts", at_risk: "At risk", breached: "Breached", p1_open: "Emergencies (P1)",
  queue_hint: "Sorted by time left on the 15-minute clock, most urgent first.", no_open: "No open alerts.",
  recent_closed: "Recently closed",
  col_priority: "Prio", col_code: "Code", col_left: "Time left", col_elder: "Elder", col_village: "Village",
  col_kind: "Kind", col_count: "Triggers", col_asked: "Asked", col_taker: "Accepted by", col_status: "Status",
  col_raised: "Raised", col_outcome: "Outcome",
  overdue: "overdue", call_120: "Call 120", cancel_requested: "Elder asked to cancel",
  back: "Back", elder_record: "Elder record", raised_at: "Raised at", respond_by: "Respond by",
  actions: "Actions", accept_for: "Accept for an aide (phoned in)", reassign: "Reassign to", record_on_scene: "Record on scene",
  resolve: "Resolve", outcome: "Outcome", note: "Note", verified_by_phone: "Verified by phone (counts as on scene)",
  confirm_resolve: "Resolve this alert?", done: "Done", choose: "Choose…", viewer_note: "Read-only account: no actions.",
  timeline: "Timeline", ranking: "Responder ranking (ETA)", sms: "SMS", time: "Time", who: "By",
  event: "Event", detail: "Detail", rank: "#", name: "Name", role: "Role", distance: "Distance", eta: "ETA",
  source: "Basis", answer: "Answer", direction: "Dir", phone: "Number", purpose: "Purpose", body: "Text",
  sms_out: "out", sms_in: "in", minutes: "min", km: "km", none: "none",
  add: "Add", edit: "Edit", save: "Save", cancel: "Cancel", search: "Search name or code", saved: "Saved",
  code: "Code", village: "Village", address: "Address", lat: "Latitude", lon: "Longitude", flags: "Risk flags",
  guardians: "Guardian phones", devices: "Devices", consent: "Guardians may be told", night_start: "Night starts",
  night_end: "Night ends", open_count: "Open alerts", living_alone: "Lives alone", empty_nest: "Empty nest",
  left_behind: "Left behind", disabled: "Disabled", advanced_age: "Advanced age", wanders: "Wanders",
  categories: "Categories", extreme_poverty: "Extreme poverty", low_income: "Low income", semi_disabled: "Semi-disabled",
  dementia: "Dementia", severe_disability: "Severe disability", family_planning_special: "Family-planning special",
  all_categories: "All categories",
  guardian_hint: "One number per line, +86…",
  device_id: "Device id", kind: "Kind", elder: "Elder", online: "Online", offline: "Offline", battery: "Battery",
  rssi: "Signal", last_seen: "Last seen", trouble: "Trouble", enabled: "Enabled", heartbeat: "Heartbeat (s)",
  device_password: "Device password (empty: generate)", new_password: "Device password (shown once)",
  health: "Devices per township", total: "Total", low_battery: "Low battery", disabled_devices: "Disabled",
  on_duty: "On duty", off_duty: "Off duty", travel_mode: "Travel", setup_minutes: "Setup (min)",
  dispatches_today: "Asked today", accepted_today: "Accepted today", place: "Where", lang: "SMS language",
  centre: "Centre", regions: "Regions", centres: "Service centres", level: "Level", parent: "Parent",
  response_minutes: "Response (min)", elders: "Elders", duty_phone: "Duty phone", has_vehicle: "Vehicle",
  ladder: "Ladder", accept_timeout_s: "Wait per aide (s)", max_aides: "Aides asked at most",
  at_risk_s: "Township centre at (s after the alert)", centre_answer_s: "Township centre wait (s)", reminder_grace_s: "Reminder grace (s)",
  notify_guardians: "Tell guardians", voice_after_s: "Call when SMS unanswered (s)", ladder_hint: "Empty: inherited from above. Applies to alerts raised from now on.",
  region: "Region",
  dead_letters: "Rejected device messages", received_at: "Received", topic: "Topic", reason: "Reason", payload: "Payload",
  map_title: "Map of the region", legend_elder: "Elder", legend_alert: "Open alert", legend_aide: "Aide on duty",
  legend_aide_off: "Aide off duty", legend_centre: "Service centre", map_offline: "drawn offline (no network needed)",
  figures_title: "15-minute rule compliance", compliance: "Compliance", alerts: "Alerts", met: "In time",
  accept_median: "To accept (median)", on_scene_median: "To on scene (median)", month: "Month", township: "Township",
  export_csv: "Export CSV", no_figures: "No data yet.", devices_online: "Devices online",
  compliance_hint: "Compliance = on scene within 15 minutes ÷ urgent alerts (P1/P2) with a known result.", urgent: "Urgent (P1/P2)", decided: "Decided",
  accept_p90: "To accept (P90)", on_scene_p90: "To on scene (P90)",
  coverage_title: "Coverage: elders no aide reaches in time", coverage_elders: "elders", coverage_uncovered: "no on-duty aide in time",
  coverage_fastest: "Fastest aide on duty", coverage_eta: "ETA (min)", coverage_limit: "Limit (min)", coverage_seasonal: "seasonal place",
  coverage_none_on_duty: "none on duty", coverage_all_reached: "Every elder has an on-duty aide who can arrive in time.", coverage_no_aide: "Villages with no aide on duty",
  coverage_went_off: "went off duty", coverage_hint: "The dispatcher's own estimate: straight line × circuity ÷ speed + setup (imported travel times where there are).",
  err_format: "Wrong format", err_required: "Required", err_too_long: "Too long", err_range: "Out of range", err_number: "Must be a number",
  err_phone: "An E.164 number such as +8613800000000",
};

const LABELS = {
  zh: {
    kind: { sos: "一键呼叫", fall: "跌倒", smoke: "烟雾", gas: "燃气泄漏", vitals: "生命体征异常",
      bed_exit: "夜间离床未归", inactivity: "长时间无活动", water_leak: "漏水", door_open: "夜间开门",
      offline: "设备离线", low_battery: "电量低", tamper: "设备被拆", power_lost: "断电" },
    status: { raised: "已报警", dispatching: "派单中", accepted: "已接单", on_scene: "已到场", resolved: "已结束" },
    outcome: { handled: "已处理", false_alarm: "误报", hospital: "送医", elder_cancelled: "老人取消", device_recovered: "设备恢复" },
    answer: { pending: "等待回复", accepted: "接单", declined: "不能去", timed_out: "未回复", failed: "短信失败", superseded: "已由他人处理", withdrawn: "已改派他人" },
    role: { aide: "助老员", township_centre: "乡镇中心", county_centre: "县中心" },
    action: { raised: "报警", triggered_again: "再次按键", ranked: "计算助老员排序", asked: "通知",
      platform_gap: "平台中断",
      no_answer: "未回复", accepted: "接单", declined: "不能去", on_scene: "到场", resolved: "结束",
      at_risk: "有超时风险", breached: "超过15分钟", reminded: "提醒接单人", call_120_flagged: "标记需拨打120",
      cancel_requested: "老人请求取消", cancel_ignored: "取消无效（超过2分钟）", sms_failed: "短信失败",
      sms_limit_near: "短信接近每日上限", sms_limit_reached: "短信达每日上限", verified_by_phone: "电话核实",
      released: "解除接单", withdrawn: "撤回派单（已改派）", escalated: "提升级别", withdrew: "接单人去不了", reported_again: "再次报告", responder_off_duty: "助老员已下班，跳过", responder_missing: "人员已删除，跳过",
      called: "打电话", call_placed: "电话已拨出", call_key: "电话按键", call_failed: "电话未接通", call_ended: "通话结束", call_not_placed: "电话未拨出" },
    sms_status: { queued: "待发", outbox: "未发送(发件箱)", sent: "已发送", delivered: "已送达", undelivered: "未送达", failed: "失败", received: "已收到" },
    purpose: { dispatch: "派单", guardian: "告知监护人", handled_by: "已由他人处理", reminder: "提醒", pressed_again: "再次按键", help: "帮助", duty: "值班", reassigned: "已改派" },
    device_kind: { sos_button: "一键呼叫器", bed_sensor: "床垫传感器", hub: "网关", smoke: "烟感", gas: "燃气探测", water: "水浸" },
    level: { county: "县", township: "乡镇", village: "村" },
    travel: { walking: "步行", ebike: "电动车", motorbike: "摩托车", car: "汽车", horseback: "骑马", mountain_walk: "山路步行" },
    op_role: { admin: "管理员", county_operator: "县值班员", township_operator: "乡镇值班员", viewer: "只读" },
    actor: { system: "系统" },
    reason: { nearest: "最近", next_aide: "下一位", at_risk: "有超时风险", breached: "已超时", operator: "值班员指定",
      no_accept: "无人接单", no_aide_in_time: "助老员来不及", aides_exhausted: "助老员都不能去",
      taker_cannot_make_it: "接单人来不及", taker_late: "接单人迟到", centre_unavailable: "中心无人应答", too_late: "超过2分钟",
      no_sms_answer: "短信未回复", night: "夜间立即呼叫", sms_failed: "短信失败" },
    detail_key: { candidates: "候选人数", trigger_count: "第几次", note: "备注", count: "数量", limit: "上限", reason: "原因", digits: "按键", outcome: "结果" },
  },
  en: {
    kind: { sos: "SOS", fall: "Fall", smoke: "Smoke", gas: "Gas", vitals: "Vital signs",
      bed_exit: "Out of bed at night", inactivity: "Inactivity", water_leak: "Water leak", door_open: "Door at night",
      offline: "Device offline", low_battery: "Low battery", tamper: "Tamper", power_lost: "Power lost" },
    status: { raised: "raised", dispatching: "dispatching", accepted: "accepted", on_scene: "on scene", resolved: "resolved" },
    outcome: { handled: "handled", false_alarm: "false alarm", hospital: "to hospital", elder_cancelled: "elder cancelled", device_recovered: "device recovered" },
    answer: { pending: "waiting", accepted: "accepted", declined: "declined", timed_out: "no answer", failed: "SMS failed", superseded: "superseded", withdrawn: "reassigned away" },
    role: { aide: "aide", township_centre: "township centre", county_centre: "county centre" },
    action: { raised: "raised", triggered_again: "pressed again", ranked: "responders ranked", asked: "asked",
      platform_gap: "platform outage",
      no_answer: "no answer", accepted: "accepted", declined: "declined", on_scene: "on scene", resolved: "resolved",
      at_risk: "at risk", breached: "15 minutes breached", reminded: "taker reminded", call_120_flagged: "call 120 flagged",
      cancel_requested: "cancel requested", cancel_ignored: "cancel ignored (too late)", sms_failed: "SMS failed",
      sms_limit_near: "SMS daily limit near", sms_limit_reached: "SMS daily limit reached", verified_by_phone: "verified by phone",
      released: "taker released", withdrawn: "request withdrawn (reassigned)", escalated: "priority raised", withdrew: "taker cannot go", reported_again: "reported again", responder_off_duty: "aide off duty, skipped", responder_missing: "responder removed, skipped",
      called: "phone call", call_placed: "call placed", call_key: "key pressed on the call", call_failed: "call not answered", call_ended: "call ended", call_not_placed: "call not placed" },
    sms_status: { queued: "queued", outbox: "outbox (not sent)", sent: "sent", delivered: "delivered", undelivered: "undelivered", failed: "failed", received: "received" },
    purpose: { dispatch: "dispatch", guardian: "guardian", handled_by: "handled by other", reminder: "reminder", pressed_again: "pressed again", help: "help", duty: "duty", reassigned: "reassigned" },
    device_kind: { sos_button: "SOS button", bed_sensor: "Bed sensor", hub: "Hub", smoke: "Smoke", gas: "Gas", water: "Water" },
    level: { county: "county", township: "township", village: "village" },
    travel: { walking: "walking", ebike: "e-bike", motorbike: "motorbike", car: "car", horseback: "horseback", mountain_walk: "on foot, mountain tracks" },
    op_role: { admin: "admin", county_operator: "county operator", township_operator: "township operator", viewer: "viewer" },
    actor: { system: "system" },
    reason: { nearest: "nearest", next_aide: "next aide", at_risk: "at risk", breached: "breached", operator: "operator's choice",
      no_accept: "nobody accepted", no_aide_in_time: "no aide in time", aides_exhausted: "no aide left",
      taker_cannot_make_it: "taker cannot make it", taker_late: "taker late", centre_unavailable: "centre unavailable", too_late: "after 2 minutes",
      no_sms_answer: "SMS unanswered", night: "night: at once", sms_failed: "SMS failed" },
    detail_key: { candidates: "candidates", trigger_count: "trigger", note: "note", count: "count", limit: "limit", reason: "reason", digits: "key", outcome: "outcome" },
  },
};

let lang = localStorage.getItem("anxin.lang") === "en" ? "en" : "zh";

export function currentLang() { return lang; }

export function setLang(next) {
  lang = next === "en" ? "en" : "zh";
  localStorage.setItem("anxin.lang", lang);
  document.documentElement.lang = lang === "en" ? "en" : "zh-CN";
}

/** A console label. */
export function t(key) {
  const table = lang === "en" ? EN : ZH;
  return table[key] ?? ZH[key] ?? key;
}

/** A label for a value of one vocabulary (kind, status, outcome…); unknown values show as is. */
export function label(group, value) {
  if (value === null || value === undefined) return "";
  return LABELS[lang][group]?.[value] ?? String(value);
}

export function vocabulary(group) { return LABELS[lang][group] ?? {}; }

/** Fill the static labels of the page shell (data-i18n attributes). */
export function translateShell() {
  for (const el of document.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  document.documentElement.lang = lang === "en" ? "en" : "zh-CN";
}
