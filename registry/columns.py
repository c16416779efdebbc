"""The registry's sheets and their columns: the five kinds, the headers people write (Chinese or
English, with the aliases rosters use), what a blank cell means, and the words a cell may hold.

Pure data: parsing (`registry.sheets`) and export (`registry.export`) read these specs.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from anxin.schemas import DeviceKind, RegionLevel, ResponderKind


class RegistryKind(StrEnum):
    regions = "regions"
    centres = "centres"
    elders = "elders"
    devices = "devices"
    aides = "aides"


# Parents before children: a workbook's sheets are applied in this order whatever their order.
APPLY_ORDER: Final = (
    RegistryKind.regions,
    RegistryKind.centres,
    RegistryKind.elders,
    RegistryKind.devices,
    RegistryKind.aides,
)

SHEET_TITLES: Final[dict[RegistryKind, str]] = {
    RegistryKind.regions: "区域",
    RegistryKind.centres: "服务中心",
    RegistryKind.elders: "老人",
    RegistryKind.devices: "设备",
    RegistryKind.aides: "助老员",
}
# Sheet or file names that say which kind a sheet holds (Chinese ones may be part of a name,
# e.g. "岚皋县独居老人花名册").
KIND_NAME_HINTS: Final[dict[RegistryKind, tuple[str, ...]]] = {
    RegistryKind.regions: ("区域", "行政区划", "地区", "regions", "region"),
    RegistryKind.centres: ("服务中心", "养老中心", "中心", "centres", "centers", "centre"),
    RegistryKind.devices: ("设备", "devices", "device"),
    RegistryKind.aides: ("助老员", "护老员", "响应人", "aides", "responders", "aide"),
    RegistryKind.elders: ("老人", "老年人", "花名册", "服务对象", "elders", "elder"),
}

# Filled in by the blank-cell rules below; `KEEP` = leave the stored value (or the default).
KEEP: Final = object()


class Blank(StrEnum):
    """What an empty cell in a present column means."""

    keep = "keep"  # keep what is stored (numbers: coordinates, intervals)
    empty = "empty"  # the empty value ("" or no phones): clearing a cell clears the field
    false = "false"  # a flag left blank is "no"
    true = "true"  # a flag left blank is "yes" (consent, enabled, on duty)


@dataclass(frozen=True)
class ColumnSpec:
    field: str
    zh: str  # the header export writes
    en: str
    aliases: tuple[str, ...] = ()
    required: bool = False
    blank: Blank = Blank.keep
    # Export only: the column helps a person read the sheet (a village's name next to its
    # code) and is not read back.
    informational: bool = False

    @property
    def headers(self) -> tuple[str, ...]:
        return (self.zh, self.en, *self.aliases)


def _c(
    field_name: str,
    zh: str,
    en: str,
    *aliases: str,
    required: bool = False,
    blank: Blank = Blank.keep,
    informational: bool = False,
) -> ColumnSpec:
    return ColumnSpec(field_name, zh, en, aliases, required, blank, informational)


_LAT = _c("lat", "纬度", "lat", "latitude", "北纬", "纬度(°)")
_LON = _c("lon", "经度", "lon", "longitude", "lng", "东经", "经度(°)")
_TOWNSHIP = _c(
    "township", "所属乡镇", "township", "乡镇", "乡镇(街道)", "镇", "乡", blank=Blank.empty
)
VILLAGE = _c(
    "village", "所属村", "village", "村", "村(社区)", "所属村(社区)", "村名", blank=Blank.empty
)
_VILLAGE_CODE = _c("village_code", "村编码", "village_code", "村代码", blank=Blank.empty)

COLUMNS: Final[dict[RegistryKind, tuple[ColumnSpec, ...]]] = {
    RegistryKind.regions: (
        _c("code", "区域编码", "code", "编码", "区划代码", "代码", required=True),
        _c("name", "名称", "name", "区域名称", "区划名称", required=True),
        _c("level", "级别", "level", "层级", "类型", required=True),
        _c(
            "parent",
            "上级编码",
            "parent_code",
            "上级区域编码",
            "上级代码",
            "parent",
            blank=Blank.empty,
        ),
        _LAT,
        _LON,
        _c("response_minutes", "响应时限(分钟)", "response_minutes", "响应时限", "时限"),
        _c("circuity", "绕行系数", "circuity", "道路系数"),
    ),
    RegistryKind.centres: (
        _c(
            "region",
            "区域编码",
            "region_code",
            "所属区域",
            "区域",
            "所属乡镇",
            "乡镇",
            required=True,
        ),
        _c("region_name", "区域名称", "region_name", informational=True),
        _c("name", "中心名称", "name", "名称", "服务中心", required=True),
        _c("duty_phone", "值班电话", "duty_phone", "电话", "联系电话", required=True),
        _LAT,
        _LON,
        _c("has_vehicle", "有车辆", "has_vehicle", "车辆", "配车", blank=Blank.true),
    ),
    RegistryKind.elders: (
        _c("code", "老人编号", "elder_code", "编号", "档案号", "code", required=True),
        _c("name", "姓名", "name", "老人姓名", required=True),
        _TOWNSHIP,
        VILLAGE,
        _VILLAGE_CODE,
        _c("address", "住址", "address", "地址", "家庭住址", "居住地址", blank=Blank.empty),
        _LAT,
        _LON,
        # The civil-affairs categories, a column each (a 类别 cell may name them instead).
        _c(
            "extreme_poverty",
            "特困",
            "extreme_poverty",
            "分散供养特困",
            "特困人员",
            "特困供养",
            "五保",
            "五保户",
            blank=Blank.false,
        ),
        _c("low_income", "低保", "low_income", "低保户", "经济困难", "低保对象", blank=Blank.false),
        _c("living_alone", "独居", "living_alone", blank=Blank.false),
        _c("empty_nest", "空巢", "empty_nest", blank=Blank.false),
        _c("left_behind", "留守", "left_behind", blank=Blank.false),
        _c("advanced_age", "高龄", "advanced_age", blank=Blank.false),
        _c("disabled", "失能", "disabled", "失能半失能", "完全失能", blank=Blank.false),
        _c("semi_disabled", "半失能", "semi_disabled", "部分失能", blank=Blank.false),
        _c("dementia", "失智", "dementia", "认知障碍", blank=Blank.false),
        _c("severe_disability", "重残", "severe_disability", "重度残疾", blank=Blank.false),
        _c(
            "family_planning_special",
            "计划生育特殊家庭",
            "family_planning_special",
            "计生特殊家庭",
            "失独",
            blank=Blank.false,
        ),
        _c("wanders", "走失风险", "wanders", "走失", "易走失", blank=Blank.false),
        _c(
            "categories",
            "类别",
            "categories",
            "老人类别",
            "人员类别",
            "特殊困难类型",
            "困难类型",
            blank=Blank.empty,
        ),
        _c(
            "guardian_phones",
            "监护人电话",
            "guardian_phones",
            "监护人联系电话",
            "紧急联系人电话",
            "子女电话",
            blank=Blank.empty,
        ),
        _c("consent", "知情同意", "consent", "同意", blank=Blank.true),
        _c("night_start", "夜间开始", "night_start"),
        _c("night_end", "夜间结束", "night_end"),
        # A second place part of each year: all four of lat, lon, start and end, or none.
        _c("season_address", "季节住址", "season_address", "第二住址", "季节地址"),
        _c("season_lat", "季节纬度", "season_lat"),
        _c("season_lon", "季节经度", "season_lon"),
        _c("season_start", "季节起", "season_start", "季节开始", "起"),
        _c("season_end", "季节止", "season_end", "季节结束", "止"),
    ),
    RegistryKind.devices: (
        _c(
            "device_id",
            "设备编号",
            "device_id",
            "设备号",
            "设备ID",
            "设备id",
            "IMEI",
            required=True,
        ),
        _c("kind", "设备类型", "kind", "类型", "device_kind", required=True),
        _c("elder_code", "老人编号", "elder_code", "编号", required=True),
        _c("elder_name", "老人姓名", "elder_name", "姓名", informational=True),
        _c("heartbeat_interval_s", "心跳间隔(秒)", "heartbeat_interval_s", "心跳间隔"),
        _c("enabled", "启用", "enabled", "在用", blank=Blank.true),
        _c("password", "设备密码", "password", "密码", "device_password", blank=Blank.empty),
    ),
    RegistryKind.aides: (
        _c("name", "姓名", "name", "助老员姓名", required=True),
        _c("phone", "手机号", "phone", "手机", "手机号码", "联系电话", "电话", required=True),
        _TOWNSHIP,
        VILLAGE,
        _VILLAGE_CODE,
        _LAT,
        _LON,
        _c("travel_mode", "出行方式", "travel_mode", "交通方式", "交通工具"),
        _c("setup_minutes", "准备时间(分钟)", "setup_minutes", "准备时间", "出发准备(分钟)"),
        _c("on_duty", "在岗", "on_duty", "值班", "在班", blank=Blank.true),
        _c("lang", "短信语言", "lang", "语言"),
    ),
}

# Personal data the platform must not keep (PIPL: minimum data): refused with a notice.
ID_NUMBER_HEADERS: Final = frozenset(
    {
        "身份证号",
        "身份证",
        "身份证号码",
        "公民身份号码",
        "证件号码",
        "id_number",
        "id_card",
        "idnumber",
    }
)
# Columns rosters often have that identify nothing the platform needs: ignored without a word.
SILENT_HEADERS: Final = frozenset({"序号", "no", "no.", "#", "编号序号", "备注", "note", "notes"})

LEVEL_ALIASES: Final[dict[str, RegionLevel]] = {
    "county": RegionLevel.county,
    "县": RegionLevel.county,
    "区": RegionLevel.county,
    "县区": RegionLevel.county,
    "县级": RegionLevel.county,
    "township": RegionLevel.township,
    "乡镇": RegionLevel.township,
    "乡": RegionLevel.township,
    "镇": RegionLevel.township,
    "街道": RegionLevel.township,
    "乡级": RegionLevel.township,
    "village": RegionLevel.village,
    "村": RegionLevel.village,
    "社区": RegionLevel.village,
    "村(社区)": RegionLevel.village,
    "村级": RegionLevel.village,
}
LEVEL_ZH: Final = {
    RegionLevel.county: "县",
    RegionLevel.township: "乡镇",
    RegionLevel.village: "村",
}
LEVEL_RANK: Final = {RegionLevel.county: 0, RegionLevel.township: 1, RegionLevel.village: 2}

DEVICE_KIND_ALIASES: Final[dict[str, DeviceKind]] = {
    **{k.value: k for k in DeviceKind},
    "sos": DeviceKind.sos_button,
    "一键呼叫": DeviceKind.sos_button,
    "一键呼叫器": DeviceKind.sos_button,
    "呼叫器": DeviceKind.sos_button,
    "紧急呼叫": DeviceKind.sos_button,
    "sos按钮": DeviceKind.sos_button,
    "床垫": DeviceKind.bed_sensor,
    "智能床垫": DeviceKind.bed_sensor,
    "床位传感器": DeviceKind.bed_sensor,
    "离床感应": DeviceKind.bed_sensor,
    "bed": DeviceKind.bed_sensor,
    "网关": DeviceKind.hub,
    "主机": DeviceKind.hub,
    "智能网关": DeviceKind.hub,
    "烟感": DeviceKind.smoke,
    "烟雾报警器": DeviceKind.smoke,
    "烟雾": DeviceKind.smoke,
    "燃气": DeviceKind.gas,
    "燃气报警器": DeviceKind.gas,
    "可燃气体": DeviceKind.gas,
    "水浸": DeviceKind.water,
    "水浸报警器": DeviceKind.water,
}
# Mains-powered devices poll every minute; battery detectors less often (device_sim.region).
DEFAULT_HEARTBEAT_S: Final = {
    DeviceKind.smoke: 300,
    DeviceKind.gas: 300,
    DeviceKind.water: 300,
}
TRAVEL_MODE_ALIASES: Final[dict[str, str]] = {
    "walking": "walking",
    "步行": "walking",
    "走路": "walking",
    "ebike": "ebike",
    "电动车": "ebike",
    "电瓶车": "ebike",
    "电动自行车": "ebike",
    "motorbike": "motorbike",
    "摩托车": "motorbike",
    "摩托": "motorbike",
    "car": "car",
    "汽车": "car",
    "小车": "car",
    "轿车": "car",
    "私家车": "car",
    "horseback": "horseback",
    "骑马": "horseback",
    "马": "horseback",
    "马背": "horseback",
    "mountain_walk": "mountain_walk",
    "山路步行": "mountain_walk",
    "山路": "mountain_walk",
    "步行山路": "mountain_walk",
    "徒步山路": "mountain_walk",
}
TRAVEL_MODE_ZH: Final = {
    "walking": "步行",
    "ebike": "电动车",
    "motorbike": "摩托车",
    "car": "汽车",
    "horseback": "骑马",
    "mountain_walk": "山路步行",
}
# The civil-affairs categories (the seeds' list; 探访关爱 decides visits by them): each flag and
# the word export, the API's `categories` and the console write for it.
CATEGORY_ZH: Final[dict[str, str]] = {
    "extreme_poverty": "特困",
    "low_income": "低保",
    "living_alone": "独居",
    "empty_nest": "空巢",
    "left_behind": "留守",
    "advanced_age": "高龄",
    "disabled": "失能",
    "semi_disabled": "半失能",
    "dementia": "失智",
    "severe_disability": "重残",
    "family_planning_special": "计划生育特殊家庭",
}
# Every yes/no flag of an elder: the categories and the wandering risk (a rule's, not a category).
ELDER_FLAGS: Final = (*CATEGORY_ZH, "wanders")
# The words a roster's 类别 cell uses, each → the flag it sets. Words are compared after NFKC
# (full-width letters, brackets) and lower case; a word not here, also without one of
# CATEGORY_SUFFIXES and also not as known words written together ("独居高龄"), is a note on
# its row naming it (registry.sheets.parse_categories).
CATEGORY_WORDS: Final[dict[str, str]] = {
    **{zh: flag for flag, zh in CATEGORY_ZH.items()},
    **{flag: flag for flag in ELDER_FLAGS},
    # 特困: since 2014 the old 五保 (农村五保供养) are 特困人员, at home 分散供养, in a home 集中供养.
    "分散供养特困": "extreme_poverty",
    "特困供养": "extreme_poverty",
    "特困人员": "extreme_poverty",
    "特困供养人员": "extreme_poverty",
    "分散供养": "extreme_poverty",
    "集中供养": "extreme_poverty",
    "五保": "extreme_poverty",
    "五保户": "extreme_poverty",
    "低保户": "low_income",
    "低保对象": "low_income",
    "经济困难": "low_income",
    "低收入": "low_income",
    "完全失能": "disabled",
    "失能半失能": "disabled",  # as the column of that name: one of the two, read as the graver
    "部分失能": "semi_disabled",
    "认知障碍": "dementia",
    "老年痴呆": "dementia",
    "痴呆": "dementia",
    "重度残疾": "severe_disability",
    "重度残疾人": "severe_disability",
    "一级残疾": "severe_disability",  # 重度残疾 is disability grade 1 or 2
    "二级残疾": "severe_disability",
    "计生特殊家庭": "family_planning_special",
    "失独": "family_planning_special",
    "计生特扶": "family_planning_special",
    "走失": "wanders",
    "走失风险": "wanders",
    "易走失": "wanders",
}
# Endings a word may carry ("独居老人", "低保户", "失独家庭"): dropped when the word alone is not known.
CATEGORY_SUFFIXES: Final = ("老年人", "老人", "人员", "对象", "家庭", "户")
# A 类别 cell saying "none".
CATEGORY_NONE: Final = frozenset({"无", "否", "-", "—", "——", "无类别", "none"})


# Minutes a responder needs before setting off: a centre's duty car, an aide's e-bike (the import,
# the API and the simulator's seed make responders with these).
CENTRE_SETUP_MINUTES: Final = 5.0
AIDE_SETUP_MINUTES: Final = 2.0


def centre_responder(centre_name: str, level: str) -> tuple[str, ResponderKind]:
    """The name a centre's duty responder is made with, and its kind (by the centre's level):
    one rule for the API, the import and the simulator's seed."""
    kind = (
        ResponderKind.county_centre
        if level == RegionLevel.county
        else ResponderKind.township_centre
    )
    return f"{centre_name}值班"[:32], kind
