"""The registry API's input and output models (CONTRACT.md §4).

Input models strip surrounding spaces (pasted from spreadsheets) and refuse text Postgres cannot
store; output models are read from the stored rows (`from_row(Model, row, **what_the_row_lacks)`),
never copied field by field.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, Field, computed_field, field_validator, model_validator

from anxin.models import Region
from anxin.schemas import DEVICE_ID_RE, DeviceKind, ResponderKind
from anxin.web import RowId, storable_text
from dispatcher.routing import TravelMode, parse_month_day
from registry.columns import CATEGORY_ZH

PHONE_PATTERN = r"^\+[1-9][0-9]{7,14}$"  # E.164, as the SMS provider needs it
CODE_PATTERN = r"^[A-Za-z0-9_-]{1,32}$"
HHMM_PATTERN = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"
Name = Annotated[str, Field(min_length=1, max_length=32)]
Phone = Annotated[str, Field(pattern=PHONE_PATTERN, max_length=20)]
Lat = Annotated[float, Field(ge=-90, le=90)]
Lon = Annotated[float, Field(ge=-180, le=180)]


def _strip(value: Any) -> Any:
    return storable_text(value.strip()) if isinstance(value, str) else value


class _In(BaseModel):
    """Input models strip surrounding spaces (pasted from spreadsheets) before validating, and
    refuse text Postgres cannot store (NUL, lone surrogates) with a 422."""

    @field_validator("*", mode="before")
    @classmethod
    def _stripped(cls, value: Any) -> Any:
        return _strip(value)


class RegionIn(_In):
    code: str = Field(pattern=CODE_PATTERN)
    name: Name
    level: Literal["township", "village"]
    parent_id: RowId
    lat: Lat | None = None
    lon: Lon | None = None
    response_minutes: int = Field(default=15, ge=1, le=120)


class RegionView(BaseModel):
    """A region as the registry looks it up (the import, its scope check, the export); the API's
    `RegionOut` is this and a little more."""

    id: int
    code: str
    name: str
    level: str
    parent_id: int | None
    lat: float | None
    lon: float | None

    @classmethod
    def of(cls, region: Region) -> RegionView:
        return cls.model_validate(region, from_attributes=True)


class RegionOut(RegionView):
    response_minutes: int
    elders: int = 0


class CentreIn(_In):
    region_id: RowId
    name: Annotated[str, Field(min_length=1, max_length=64)]
    duty_phone: Phone
    lat: Lat
    lon: Lon
    has_vehicle: bool = True


class CentreOut(CentreIn):
    id: int
    level: str
    region: str


class ElderIn(_In):
    code: str = Field(pattern=CODE_PATTERN)
    name: Name
    village_id: RowId
    address: str = Field(default="", max_length=128)
    lat: Lat
    lon: Lon
    # The civil-affairs categories (registry.columns.CATEGORY_ZH), then the wandering risk.
    extreme_poverty: bool = False
    low_income: bool = False
    living_alone: bool = False
    empty_nest: bool = False
    left_behind: bool = False
    advanced_age: bool = False
    disabled: bool = False
    semi_disabled: bool = False
    dementia: bool = False
    severe_disability: bool = False
    family_planning_special: bool = False
    wanders: bool = False
    guardian_phones: list[Phone] = Field(default_factory=list, max_length=5)
    consent: bool = True
    night_start: str = Field(default="22:00", pattern=HHMM_PATTERN)
    night_end: str = Field(default="06:00", pattern=HHMM_PATTERN)
    # A second place part of each year (a summer pasture, a child's home in town): routing and
    # coverage use it from season_start to season_end (MM-DD, every year, both days included).
    season_address: str | None = Field(default=None, max_length=128)
    season_lat: Lat | None = None
    season_lon: Lon | None = None
    season_start: str | None = None
    season_end: str | None = None

    @field_validator("season_start", "season_end", mode="after")
    @classmethod
    def _month_day(cls, value: str | None) -> str | None:
        if not value:
            return None
        try:
            return parse_month_day(value)
        except ValueError:
            raise ValueError("应为 月-日，如 06-01 / expected MM-DD") from None

    @model_validator(mode="after")
    def _season_whole(self) -> ElderIn:
        parts = (self.season_lat, self.season_lon, self.season_start, self.season_end)
        if any(p is not None for p in parts) and any(p is None for p in parts):
            raise ValueError(
                "季节住址需同时填纬度、经度、起、止 / a seasonal place needs lat, lon, start and end"
            )
        return self


class DeviceBrief(BaseModel):
    id: str
    kind: str
    online: bool
    enabled: bool
    battery: int | None
    last_seen_at: datetime | None


class ElderOut(ElderIn):
    id: int
    village: str
    devices: list[DeviceBrief] = Field(default_factory=list)
    open_alerts: int = 0
    # Set when the elder was removed (DELETE): kept for the history, out of the lists.
    archived_at: datetime | None = None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def categories(self) -> list[str]:
        """The elder's categories in Chinese, as a roster's 类别 cell writes them."""
        return [zh for flag, zh in CATEGORY_ZH.items() if getattr(self, flag)]


class DeviceIn(_In):
    kind: DeviceKind
    elder_id: RowId
    heartbeat_interval_s: int = Field(default=60, ge=10, le=3600)
    enabled: bool = True


class DeviceCreate(DeviceIn):
    id: str = Field(pattern=DEVICE_ID_RE.pattern)
    # None: the platform makes one up and shows it once, for the installer to put in the device.
    password: str | None = Field(default=None, min_length=8, max_length=64)


class DeviceOut(BaseModel):
    id: str
    kind: str
    elder_id: int
    elder: str
    village: str
    enabled: bool
    online: bool
    battery: int | None
    rssi: int | None
    last_seen_at: datetime | None
    heartbeat_interval_s: int
    trouble: list[str]
    password: str | None = None  # only in the answer that created it
    # Set when the device was removed (DELETE): kept for its events' sake, disabled for good.
    archived_at: datetime | None = None


class ResponderIn(_In):
    kind: ResponderKind = ResponderKind.aide
    name: Name
    phone: Phone
    village_id: RowId | None = None
    centre_id: RowId | None = None
    lat: Lat
    lon: Lon
    travel_mode: TravelMode = TravelMode.ebike
    setup_minutes: float = Field(default=2.0, ge=0, le=60)
    on_duty: bool = True
    lang: Literal["zh", "en"] = "zh"


class ResponderOut(ResponderIn):
    id: int
    place: str
    dispatches_today: int = 0
    accepted_today: int = 0

    @field_validator("lang", mode="before")
    @classmethod
    def _known_lang(cls, value: Any) -> Any:
        return "en" if value == "en" else "zh"


class MapPoint(BaseModel):
    id: int
    name: str
    lat: float
    lon: float
    kind: str = ""
    on_duty: bool = True


class MapOut(BaseModel):
    villages: list[MapPoint]
    elders: list[MapPoint]
    responders: list[MapPoint]
    centres: list[MapPoint]


OutT = TypeVar("OutT", bound=BaseModel)


class _Joined:
    """A stored row and the values it does not hold itself (counts, names of joined rows)."""

    def __init__(self, row: object, extra: dict[str, Any]) -> None:
        self._row, self._extra = row, extra

    def __getattr__(self, name: str) -> Any:
        return self._extra[name] if name in self._extra else getattr(self._row, name)


def from_row(model: type[OutT], row: object, **extra: Any) -> OutT:
    """`model` from a stored row's attributes, plus `extra` for what the row lacks."""
    return model.model_validate(_Joined(row, extra), from_attributes=True)
