"""Message schemas of the device protocol (CONTRACT.md §1), shared by gateway, simulator and tests."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, Field

TOPIC_ROOT = "anxin/v1/dev"
MAX_EVENT_BYTES = 4096
DEVICE_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class EventType(StrEnum):
    sos = "sos"
    sos_cancel = "sos_cancel"
    fall = "fall"
    bed_exit = "bed_exit"
    bed_return = "bed_return"
    vitals = "vitals"
    smoke = "smoke"
    gas = "gas"
    water_leak = "water_leak"
    door_open = "door_open"
    inactivity = "inactivity"
    low_battery = "low_battery"
    tamper = "tamper"
    power_lost = "power_lost"
    power_restored = "power_restored"
    test = "test"
    # A care visit made at the home (issue 18): the hub's visit button. Data (all optional):
    # {"mode": "home"|"phone", "concern": bool, "urgent": bool, "note": str}. No alert by itself.
    visit = "visit"


class RejectReason(StrEnum):
    invalid_json = "invalid_json"
    invalid_payload = "invalid_payload"
    unknown_type = "unknown_type"
    too_large = "too_large"
    unknown_device = "unknown_device"
    disabled_device = "disabled_device"


# --- the registry's plain vocabularies (the tables in anxin.models store their values) ---------


class RegionLevel(StrEnum):
    county = "county"
    township = "township"
    village = "village"


class DeviceKind(StrEnum):
    sos_button = "sos_button"
    bed_sensor = "bed_sensor"
    hub = "hub"
    smoke = "smoke"
    gas = "gas"
    water = "water"


# What operators call each kind (the registry's sheets, the monthly figures).
DEVICE_KIND_ZH: dict[str, str] = {
    DeviceKind.sos_button: "一键呼叫",
    DeviceKind.bed_sensor: "智能床垫",
    DeviceKind.hub: "网关",
    DeviceKind.smoke: "烟感",
    DeviceKind.gas: "燃气",
    DeviceKind.water: "水浸",
}


class ResponderKind(StrEnum):
    aide = "aide"
    township_centre = "township_centre"
    county_centre = "county_centre"


class OperatorRole(StrEnum):
    admin = "admin"
    county_operator = "county_operator"
    township_operator = "township_operator"
    viewer = "viewer"


AckStatus = Literal["accepted", "duplicate", "rejected"]


class Ack(BaseModel):
    event_id: str | None
    status: AckStatus
    alert_id: str | None = None
    reason: RejectReason | None = None

    def to_json(self) -> bytes:
        body = self.model_dump_json(exclude_none=True).encode()
        if self.event_id is None:
            # `"event_id": null` says the payload could not be read: the device must not resend
            # it (CONTRACT §5). The other empty fields stay out, as before.
            return b'{"event_id":null,' + body[1:]
        return body


class Heartbeat(BaseModel):
    ts: int | None = None
    battery: int | None = Field(default=None, ge=0, le=100)
    rssi: int | None = None


def topic(device_id: str, leaf: str) -> str:
    return f"{TOPIC_ROOT}/{device_id}/{leaf}"


def alert_code(alert_id: int | None) -> str | None:
    return None if alert_id is None else f"A{alert_id}"


def event_json(event_id: str, type_: str, ts: int | None = None, data: Any = None) -> bytes:
    """What a device publishes (used by the simulator and tests)."""
    import json

    body: dict[str, Any] = {"event_id": event_id, "type": type_}
    if ts is not None:
        body["ts"] = ts
    if data is not None:
        body["data"] = data
    return json.dumps(body, ensure_ascii=False).encode()
