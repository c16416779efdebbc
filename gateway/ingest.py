"""Pure parsing of device messages (CONTRACT.md §1). No I/O; never raises on any input."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from alert_service.rules import P1_EVENT_TYPES
from anxin.schemas import (
    DEVICE_ID_RE,
    MAX_EVENT_BYTES,
    TOPIC_ROOT,
    EventType,
    Heartbeat,
    RejectReason,
)

_ROOT_PARTS = TOPIC_ROOT.split("/")
# Valid UTF-8 input can only yield NUL or a lone surrogate through a JSON escape: only a payload
# with one of these needs the (slow) walk that cleans every string.
_UNSTORABLE_ESCAPE = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])")
# orjson reads an integer past 64 bits as a float, the standard library as an int.
_LONG_NUMBER = re.compile(r"[0-9]{20}")
# A payload too large to store is still read for its event_id, so the device's ack names the
# event (CONTRACT §5): parsed whole up to this size, beyond it only when the object begins with
# its event_id, so a huge message costs no parse.
_READ_ID_MAX_BYTES = 1 << 20
_LEADING_EVENT_ID = re.compile(rb'\A\s*\{\s*"event_id"\s*:\s*"([^"\\\x00-\x1f]{1,256})"')
# Device clocks before 2001 or far in the future are not trusted as times.
_MIN_TS_MS = 978_307_200_000
_MAX_TS_MS = 4_102_444_800_000


@dataclass(frozen=True)
class TopicParts:
    device_id: str
    leaf: str  # event | heartbeat | status | ...


def parse_topic(topic: str) -> TopicParts | None:
    parts = topic.split("/")
    if len(parts) != len(_ROOT_PARTS) + 2 or parts[: len(_ROOT_PARTS)] != _ROOT_PARTS:
        return None
    device_id, leaf = parts[-2], parts[-1]
    if not DEVICE_ID_RE.match(device_id):
        return None
    return TopicParts(device_id, leaf)


@dataclass(frozen=True)
class ParsedEvent:
    event_id: str
    type: EventType
    device_ts: datetime | None
    data: dict[str, Any]
    raw: dict[str, Any]
    # Optional fields that were present but unusable: kept for the record, never fatal.
    damaged: tuple[str, ...] = field(default=())
    # The payload as received when it is storable as it stands (no NUL, no lone surrogate): the
    # database parses it into jsonb itself, so it is not encoded again. None: store `raw`.
    text: str | None = None


@dataclass(frozen=True)
class Rejection:
    reason: RejectReason
    detail: str
    event_id: str | None = None


def _ts(value: Any) -> datetime | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not _MIN_TS_MS <= value <= _MAX_TS_MS:
        return None
    return datetime.fromtimestamp(value / 1000, UTC)


def _storable(value: Any) -> Any:
    """The value with every string made storable in Postgres: JSON allows NUL (\\u0000) and
    lone surrogates, which Postgres text and jsonb refuse. One such byte must not poison a batch."""
    if isinstance(value, str):
        if "\x00" in value or not value.isascii():
            value = value.replace("\x00", "\ufffd")
            value = value.encode("utf-8", "replace").decode("utf-8")
        return value
    if isinstance(value, dict):
        return {_storable(k): _storable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_storable(v) for v in value]
    return value


def _loads(text: str) -> Any:
    """JSON as the standard library reads it, by orjson (~4x faster) where the two agree: what
    orjson refuses (a lone surrogate escape, NaN, 1e400, nesting past 1024) and any run of 20
    digits (an integer past 64 bits, which orjson would read as a float) the standard library
    decides, so the payloads accepted and their values are exactly the same."""
    if _LONG_NUMBER.search(text) is None:
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass
    return json.loads(text)


def _sound_event_id(value: Any) -> str | None:
    if isinstance(value, str) and 1 <= len(value) <= 64 and _storable(value) == value:
        return value
    return None


def readable_event_id(payload: bytes) -> str | None:
    """The event_id of a payload rejected for its size, when it can be read; None otherwise."""
    if len(payload) <= _READ_ID_MAX_BYTES:
        try:
            body = _loads(payload.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            return None
        return _sound_event_id(body.get("event_id")) if isinstance(body, dict) else None
    leading = _LEADING_EVENT_ID.match(payload)
    if leading is None:
        return None
    try:
        return _sound_event_id(leading.group(1).decode("utf-8"))
    except UnicodeDecodeError:
        return None


def parse_event(payload: bytes) -> ParsedEvent | Rejection:
    """Validate an event payload. Only identity (event_id) and type must be sound:
    damaged optional fields are dropped and noted ("when in doubt, alert")."""
    if len(payload) > MAX_EVENT_BYTES:
        return Rejection(
            RejectReason.too_large,
            f"{len(payload)} bytes > {MAX_EVENT_BYTES}",
            readable_event_id(payload),
        )
    try:
        decoded = payload.decode("utf-8")
        body = _loads(decoded)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        return Rejection(RejectReason.invalid_json, type(exc).__name__)
    text: str | None = decoded
    if not isinstance(body, dict):
        return Rejection(RejectReason.invalid_payload, "payload is not a JSON object")
    event_id = body.get("event_id")
    if not isinstance(event_id, str) or not 1 <= len(event_id) <= 64:
        return Rejection(RejectReason.invalid_payload, "event_id must be a string of 1-64 chars")
    if _storable(event_id) != event_id:
        return Rejection(RejectReason.invalid_payload, "event_id holds NUL or a lone surrogate")
    damaged: list[str] = []
    try:
        if _UNSTORABLE_ESCAPE.search(payload):
            body = _storable(body)
            text = None
    except RecursionError:
        # Nested too deeply to clean: keep identity, type and time; the rest is damaged.
        body = {
            k: _storable(body[k])
            for k in ("event_id", "type", "ts")
            if k in body and not isinstance(body[k], dict | list)
        }
        damaged.append("nesting")
        text = None
    type_ = body.get("type")
    if not isinstance(type_, str):
        return Rejection(RejectReason.invalid_payload, "type must be a string", event_id)
    try:
        event_type = EventType(type_)
    except ValueError:
        return Rejection(RejectReason.unknown_type, f"unknown type {type_[:32]!r}", event_id)
    device_ts = None
    if "ts" in body:
        device_ts = _ts(body["ts"])
        if device_ts is None:
            damaged.append("ts")
    data = body.get("data", {})
    if not isinstance(data, dict):
        damaged.append("data")
        data = {}
    return ParsedEvent(event_id, event_type, device_ts, data, body, tuple(damaged), text)


# A device with more events than this in one batch is flooding (a stuck button, a replay).
FLOODING_EVENTS = 3


def urgent_first(
    events: Sequence[tuple[str, ParsedEvent | Rejection | None]],
) -> list[list[int]]:
    """The order in which to store a batch of (device id, parsed event): groups of positions,
    each committed and acked before the next. First every event of a device that sent an SOS,
    a fall, smoke or gas in this batch; of those, a device flooding the batch (more than
    `FLOODING_EVENTS` events) after the others, so that one stuck button's hundreds of SOS do
    not hold up a press elsewhere; then the other devices' events. A township's `power_lost`
    reports arriving with an SOS elsewhere are so committed after it, not with it. Each
    device's events keep their order (a `cancel` before a new `sos` stays before it); devices'
    events were never ordered among each other (the gateway's lanes and replicas take them in
    parallel). Empty groups are left out."""
    counts = Counter(device_id for device_id, _ in events)
    urgent_devices = {
        device_id
        for device_id, parsed in events
        if isinstance(parsed, ParsedEvent) and parsed.type.value in P1_EVENT_TYPES
    }

    def group(device_id: str) -> int:
        if device_id not in urgent_devices:
            return 2
        return 1 if counts[device_id] > FLOODING_EVENTS else 0

    groups: list[list[int]] = [[], [], []]
    for i, (device_id, _) in enumerate(events):
        groups[group(device_id)].append(i)
    return [g for g in groups if g]


def parse_heartbeat(payload: bytes) -> Heartbeat:
    """Heartbeats carry only optional fields: anything unreadable counts as a bare heartbeat."""
    try:
        body = json.loads(payload.decode("utf-8")) if payload else {}
    except (UnicodeDecodeError, ValueError, RecursionError):
        return Heartbeat()
    if not isinstance(body, dict):
        return Heartbeat()
    battery = body.get("battery")
    rssi = body.get("rssi")
    ts = body.get("ts")
    return Heartbeat(
        ts=ts if isinstance(ts, int) and not isinstance(ts, bool) else None,
        battery=battery
        if isinstance(battery, int) and not isinstance(battery, bool) and 0 <= battery <= 100
        else None,
        rssi=rssi if isinstance(rssi, int) and not isinstance(rssi, bool) else None,
    )


def truncate_payload(payload: bytes, limit: int = 1024) -> str:
    return payload[:limit].decode("utf-8", errors="replace").replace("\x00", "\ufffd")
