"""`anxin doctor` against the real Postgres and broker, and against a broken configuration: it
must say in plain words what is wrong and exit 1."""

from __future__ import annotations

from collections.abc import Callable

from pydantic import SecretStr
from typer.testing import CliRunner

from anxin.broker import free_port
from anxin.cli import app as ops_app
from anxin.doctor import (
    BROKER,
    DATABASE,
    SCHEMA,
    SECRET,
    SHARED,
    SMS,
    Check,
    Status,
    check_public_url,
    check_schema,
    check_settings,
    exit_code,
    render,
    run_checks,
)
from anxin.settings import Settings

GOOD_SECRET = SecretStr("a-long-random-production-secret-0123456789")


def _factory(**values: object) -> Callable[[], Settings]:
    return lambda: Settings(**values)  # type: ignore[arg-type]


def _by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


def _shared_group(mqtt_url: str) -> str:
    # The in-process broker (MQTT 3.1.1 only) has no shared subscriptions; Mosquitto (CI) has.
    return "" if "protocol=3.1.1" in mqtt_url else "anxin-gw"


async def test_a_sound_deployment_passes(database_url: str, mqtt_url: str) -> None:
    checks = await run_checks(
        _factory(
            database_url=SecretStr(database_url),
            mqtt_url=SecretStr(mqtt_url),
            mqtt_shared_group=_shared_group(mqtt_url),
            secret_key=GOOD_SECRET,
            public_url="https://anxin.example.gov.cn",
        )
    )
    found = _by_name(checks)
    assert found[DATABASE].status is Status.ok
    assert found[SCHEMA].status is Status.ok  # the fixture migrated it to the newest revision
    assert found[BROKER].status is Status.ok
    if _shared_group(mqtt_url):
        assert found[SHARED].status is Status.ok, found[SHARED]
    assert exit_code(checks) == 0, render(checks)


async def test_unreachable_services_are_named_with_their_address() -> None:
    db_port, mqtt_port = free_port(), free_port()
    checks = await run_checks(
        _factory(
            database_url=SecretStr(f"postgresql://postgres:hunter2pw@127.0.0.1:{db_port}/anxin"),
            mqtt_url=SecretStr(f"mqtt://gw:s3cr3tpw@127.0.0.1:{mqtt_port}"),
            secret_key=GOOD_SECRET,
        )
    )
    found = _by_name(checks)
    assert found[DATABASE].status is Status.failure
    assert f"127.0.0.1:{db_port}" in found[DATABASE].en
    assert "cannot reach Postgres" in found[DATABASE].en
    assert "连不上" in found[DATABASE].zh
    assert found[BROKER].status is Status.failure
    assert f"127.0.0.1:{mqtt_port}" in found[BROKER].en
    # Passwords from the URLs never appear in what the doctor prints.
    assert "hunter2pw" not in render(checks) and "s3cr3tpw" not in render(checks)
    assert exit_code(checks) == 1


def test_configuration_mistakes_are_failures() -> None:
    settings = Settings(
        timezone="Asia/Shanghia",
        twilio_account_sid="AC" + "0" * 32,
        twilio_from="+8610690000000",  # no auth token: half configured
    )
    found = _by_name(check_settings(settings))
    assert found[SECRET].status is Status.failure  # still the development default
    assert found[SMS].status is Status.failure
    assert "ANXIN_TWILIO_AUTH_TOKEN" in found[SMS].en
    assert any(c.status is Status.failure and "Asia/Shanghia" in c.en for c in found.values())
    twilio_local = Settings(
        twilio_account_sid="AC" + "0" * 32,
        twilio_auth_token=SecretStr("token"),
        twilio_from="+8610690000000",
        public_url="http://127.0.0.1:8000",
    )
    assert check_public_url(twilio_local).status is Status.failure


def test_outbox_mode_is_a_warning_not_a_failure() -> None:
    found = _by_name(check_settings(Settings(secret_key=GOOD_SECRET)))
    assert found[SMS].status is Status.warning
    assert exit_code(list(found.values())) == 0
    assert exit_code(list(found.values()), strict=True) == 1


def test_cli_exits_1_and_says_what_is_wrong() -> None:
    runner = CliRunner()
    result = runner.invoke(
        ops_app,
        ["doctor"],
        env={
            "ANXIN_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/anxin",
            "ANXIN_MQTT_URL": f"mqtt://127.0.0.1:{free_port()}",
            "ANXIN_HTTP_PORT": "8000",
        },
    )
    assert result.exit_code == 1
    assert "cannot reach Postgres" in result.output
    assert "cannot reach the MQTT broker" in result.output
    bad = runner.invoke(ops_app, ["doctor"], env={"ANXIN_HTTP_PORT": "eighty"})
    assert bad.exit_code == 1
    assert "ANXIN_HTTP_PORT" in bad.output


def test_schema_behind_ahead_or_missing_says_what_to_run() -> None:
    known = {"0001", "0002", "0003"}
    assert check_schema({"0003"}, {"0003"}, known).status is Status.ok
    behind = check_schema({"0001"}, {"0003"}, known)
    assert behind.status is Status.failure and "anxin db upgrade" in behind.en
    assert "0001" in behind.en and "0003" in behind.en
    empty = check_schema(set(), {"0003"}, known)
    assert empty.status is Status.failure and "no schema yet" in empty.en
    ahead = check_schema({"0009"}, {"0003"}, known)
    assert ahead.status is Status.failure and "upgrade the roles" in ahead.en
