"""What operators read of the gateway over the API (CONTRACT.md §4): dead letters, device health."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel


class DeadLetterOut(BaseModel):
    id: int
    received_at: datetime
    topic: str
    device_id: str | None
    reason: str
    detail: str
    payload: str


class TownshipHealth(BaseModel):
    township_id: int
    township: str
    devices: int
    online: int
    offline: int
    low_battery: int
    disabled: int
