"""SQL and HTML injection in names, notes and SMS replies: stored verbatim, returned verbatim as
JSON, and inert in the console (a real headless Chromium renders every page that shows them).
Webhooks without a valid Twilio signature are refused, also when no Twilio token is set."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from pathlib import Path

import httpx
from openpyxl import load_workbook
from playwright.async_api import Browser, expect
from pydantic import SecretStr
from sqlalchemy import func, select
from sqlmodel import col

from alert_service import intake, rules
from alert_service.models import Alert
from anxin.app import create_app
from anxin.clock import FakeClock
from anxin.db import transaction
from anxin.models import AuditLog, Elder, Responder
from anxin.settings import Settings
from dispatcher.models import SmsMessage
from dispatcher.twilio_provider import sign_twilio_request
from registry.apply import import_registry_file
from registry.export import export_registry
from tests.builders import login, raise_sos, village_codes
from tests.support.browser import WAIT_MS, accept_dialog, log_in
from tests.support.harness import Seeded, ServeApp

# Each fits a name (1-32 characters, no surrounding spaces). `pwn` is set only if one runs.
PAYLOADS = (
    "'); DROP TABLE elders; --",
    "<img src=x onerror=pwn=1>",
    "<script>pwn=2</script>",
    '"><svg onload=pwn=3>',
    "李' OR '1'='1",
    "{{7*7}}${pwn=4}%_\\",
)
NOTE = "\n".join(
    (
        "电话核实：误报",
        *PAYLOADS,
        "</textarea><iframe src=javascript:pwn=5>",
        "'; UPDATE alerts SET status='resolved'; --",
    )
)
INJECTED = "img[src='x'], svg[onload], iframe, script:not([src])"


async def elders_total(region: Seeded) -> int:
    async with region.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(Elder)) or 0)


async def test_hostile_elder_and_aide_names_are_stored_and_returned_verbatim(
    client: httpx.AsyncClient, region: Seeded
) -> None:
    t01 = await login(client, "t01", "anxin-t01")
    village = (await client.get("/api/regions", headers=t01)).json()
    village_id = next(r["id"] for r in village if r["level"] == "village")
    seeded = await elders_total(region)
    made: dict[str, int] = {}
    for i, name in enumerate(PAYLOADS):
        body = {
            "code": f"E-INJ-{i}",
            "name": name,
            "address": name,
            "village_id": village_id,
            "lat": 32.69,
            "lon": 109.14,
        }
        res = await client.post("/api/elders", headers=t01, json=body)
        assert res.status_code == 201, res.text
        assert (res.json()["name"], res.json()["address"]) == (name, name)
        made[name] = res.json()["id"]
        aide = {
            "name": name,
            "phone": f"+86139000099{i:02d}",
            "village_id": village_id,
            "lat": 32.7,
            "lon": 109.1,
        }
        res = await client.post("/api/responders", headers=t01, json=aide)
        assert res.status_code == 201, res.text
        assert res.json()["name"] == name

    for name, elder_id in made.items():
        got = await client.get(f"/api/elders/{elder_id}", headers=t01)
        assert got.json()["name"] == name
        # The name as a search finds that elder and no other: bound, not spliced into SQL.
        found = await client.get("/api/elders", headers=t01, params={"q": name})
        assert [e["id"] for e in found.json()] == [elder_id], name
    # LIKE's own wildcards are literal in a search.
    found = await client.get("/api/elders", headers=t01, params={"q": "%"})
    assert [e["name"] for e in found.json()] == [PAYLOADS[-1]]
    responders = {r["name"] for r in (await client.get("/api/responders", headers=t01)).json()}
    assert set(PAYLOADS) <= responders

    async with region.sessions() as session:
        stored = dict(
            (
                await session.execute(
                    select(col(Elder.name), col(Elder.id)).where(col(Elder.code).like("E-INJ-%"))
                )
            ).all()
        )
        aides = set(
            (
                await session.execute(
                    select(col(Responder.name)).where(col(Responder.phone).like("+86139000099%"))
                )
            ).scalars()
        )
    assert stored == made and aides == set(PAYLOADS)
    assert await elders_total(region) == seeded + len(PAYLOADS)  # no table dropped or emptied


async def test_a_hostile_operator_note_is_stored_and_returned_verbatim(
    client: httpx.AsyncClient, region: Seeded, clock: FakeClock
) -> None:
    alert = await raise_sos(region, clock, "T01")
    t01 = await login(client, "t01", "anxin-t01")
    res = await client.post(
        f"/api/alerts/{alert.id}/resolve",
        headers=t01,
        json={"outcome": "false_alarm", "note": NOTE},
    )
    assert res.status_code == 200, res.text
    detail = (await client.get(f"/api/alerts/{alert.id}", headers=t01)).json()
    assert detail["note"] == NOTE
    # The timeline keeps the note's first 200 characters, as they were.
    resolved = [t for t in detail["timeline"] if t["action"] == "resolved"]
    assert resolved[0]["detail"]["note"] == NOTE[:200]
    async with region.sessions() as session:
        stored = await session.get(Alert, alert.id)
        assert stored is not None and stored.note == NOTE
        audited = (
            await session.execute(
                select(AuditLog).where(
                    col(AuditLog.action) == "resolve", col(AuditLog.target_id) == str(alert.id)
                )
            )
        ).scalar_one()
        assert audited.detail["note"] == NOTE
        # The "UPDATE alerts" in the note did nothing: other alerts keep their status.
        others = await session.scalar(
            select(func.count()).where(col(Alert.id) != alert.id, col(Alert.status) == "resolved")
        )
        assert others == 0


async def test_a_hostile_sms_reply_is_stored_verbatim_and_changes_nothing(
    region: Seeded, clock: FakeClock
) -> None:
    token = "test-twilio-token"
    settings = Settings(twilio_auth_token=SecretStr(token), public_url="http://console")
    app = create_app(settings, region.sessions, clock)
    alert = await raise_sos(region, clock, "T01")
    asked = alert.ranking[0]["responder_id"]
    async with region.sessions() as session:
        aide = await session.get(Responder, asked)
        assert aide is not None
    url = "http://console/twilio/inbound"
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://console") as http:
        for i, text in enumerate((*PAYLOADS, NOTE)):
            form = {
                "From": aide.phone,
                "To": "+8610690000000",
                "Body": text,
                "MessageSid": f"SM{i}",
            }
            signature = sign_twilio_request(token, url, form)
            res = await http.post(url, data=form, headers={"X-Twilio-Signature": signature})
            assert res.status_code == 200, res.text
    async with region.sessions() as session:
        bodies = list(
            (
                await session.execute(
                    select(col(SmsMessage.body))
                    .where(col(SmsMessage.direction) == "in")
                    .order_by(col(SmsMessage.id))
                )
            ).scalars()
        )
        current = await session.get(Alert, alert.id)
    assert bodies == [*PAYLOADS, NOTE]
    assert current is not None and (current.status, current.accepted_by) == (alert.status, None)


async def test_webhooks_without_a_valid_signature_are_refused_even_with_no_token_configured(
    region: Seeded, clock: FakeClock
) -> None:
    form = {"From": "+8613800000001", "Body": "1", "MessageSid": "SMx", "MessageStatus": "failed"}
    for settings in (Settings(), Settings(twilio_auth_token=SecretStr("right-token"))):
        app = create_app(settings, region.sessions, clock)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as http:
            for path in ("/twilio/inbound", "/twilio/status"):
                url = settings.callback_base + path
                for signature in (None, "", sign_twilio_request("wrong-token", url, form)):
                    headers = {} if signature is None else {"X-Twilio-Signature": signature}
                    res = await http.post(path, data=form, headers=headers)
                    assert res.status_code == 403, (path, signature, res.text)
    async with region.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(SmsMessage)) == 0


async def test_the_console_shows_hostile_names_and_notes_as_text(
    region: Seeded, clock: FakeClock, browser: Browser, serve_app: ServeApp, artifacts_dir: Path
) -> None:
    code = next(
        e.code for e in region.plan.elders if e.village_code in village_codes(region, "T01")
    )
    async with region.sessions() as session:
        elder = (await session.execute(select(Elder).where(col(Elder.code) == code))).scalar_one()
    assert elder.id is not None
    async with transaction(region.sessions) as session:
        target = await session.get(Elder, elder.id)
        assert target is not None
        target.name = PAYLOADS[1]
        target.address = PAYLOADS[2]
        session.add(
            Responder(
                name=PAYLOADS[3],
                phone="+8613900009999",
                village_id=target.village_id,
                lat=target.lat,
                lon=target.lon,
            )
        )
    async with transaction(region.sessions) as session:
        target = await session.get(Elder, elder.id)
        assert target is not None
        alert = await intake.raise_or_join(
            session, target, rules.RaiseAlert("sos", rules.P1), None, clock.now(), "test"
        )
    app = create_app(Settings(), region.sessions, clock)
    async with serve_app(app) as base_url, httpx.AsyncClient(base_url=base_url) as http:
        t01 = await login(http, "t01", "anxin-t01")
        assert (
            await http.post(
                f"/api/alerts/{alert.id}/resolve",
                headers=t01,
                json={"outcome": "false_alarm", "note": NOTE},
            )
        ).status_code == 200
        errors: list[str] = []
        context = await browser.new_context(viewport={"width": 1440, "height": 900}, locale="zh-CN")
        page = await context.new_page()
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("dialog", accept_dialog)
        try:
            await log_in(page, base_url, "t01", "anxin-t01")
            view = page.locator("#view")
            for route, shown in (
                ("#/queue", PAYLOADS[1]),
                (f"#/alert/{alert.id}", PAYLOADS[1]),
                (f"#/alert/{alert.id}", "</textarea><iframe src=javascript:pwn=5>"),
                (f"#/alert/{alert.id}", PAYLOADS[3]),
                ("#/elders", PAYLOADS[1]),
                (f"#/elder/{elder.id}", PAYLOADS[2]),
                ("#/responders", PAYLOADS[3]),
                ("#/map", ""),
            ):
                await page.evaluate(f"location.hash = {route!r}")
                await expect(view).to_contain_text(shown, timeout=WAIT_MS)
                injected = await page.evaluate(
                    f"document.querySelectorAll({INJECTED!r}).length"
                    " + document.querySelectorAll('#view [onerror], #view [onload]').length"
                )
                assert injected == 0, f"{route}: an injected element is in the page"
                assert await page.evaluate("typeof window.pwn === 'undefined'"), route
                if route.startswith("#/alert"):
                    await page.screenshot(path=str(artifacts_dir / "security-injection.png"))
        finally:
            await context.close()
    assert errors == []


async def test_a_formula_typed_as_a_name_stays_text_in_the_exported_workbook_and_csv(
    client: httpx.AsyncClient, region: Seeded, tmp_path: Path
) -> None:
    formula = '=HYPERLINK("http://x.cn","点我")'
    t01 = await login(client, "t01", "anxin-t01")
    village_id = next(
        r["id"]
        for r in (await client.get("/api/regions", headers=t01)).json()
        if r["level"] == "village"
    )
    body = {"code": "E-XLS-1", "name": formula, "village_id": village_id, "lat": 32.7, "lon": 109.1}
    assert (await client.post("/api/elders", headers=t01, json=body)).status_code == 201

    workbook_path = (await export_registry(region.sessions, tmp_path / "county.xlsx"))[0]
    workbook = load_workbook(workbook_path)
    cells = [c for sheet in workbook.worksheets for row in sheet.iter_rows() for c in row]
    assert not [c.coordinate for c in cells if c.data_type == "f"], "a formula in the export"
    assert formula in {c.value for c in cells}
    # Read back, it is the same name: a re-import changes nothing.
    report = await import_registry_file(
        region.sessions, workbook_path.read_bytes(), workbook_path.name, now=datetime.now(UTC)
    )
    assert report.ok and report.changed == 0, report.summary_lines()[:5]

    # The CSV export too: the cell starts with an apostrophe, so Excel or WPS shows the text;
    # a phone number is left as it is; a re-import reads the name back as it was typed.
    folder = tmp_path / "county-csv"
    paths = {p.stem: p for p in await export_registry(region.sessions, folder)}
    elders = list(csv.reader(io.StringIO(paths["elders"].read_text("utf-8-sig"))))
    assert "'" + formula in {cell for row in elders for cell in row}
    aides = list(csv.reader(io.StringIO(paths["aides"].read_text("utf-8-sig"))))
    phones = [cell for row in aides[1:] for cell in row if cell.startswith(("+", "'+"))]
    assert phones and all(p.startswith("+86") for p in phones)
    report = await import_registry_file(
        region.sessions, paths["elders"].read_bytes(), "elders.csv", now=datetime.now(UTC)
    )
    assert report.ok and report.changed == 0, report.summary_lines()[:5]
