"""`anxin devices …`: broker configuration generated from the device registry."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy import select
from sqlmodel import col

from anxin.logging import get_logger
from anxin.models import Device
from anxin.mqtt import BrokerAddress
from anxin.settings import Settings
from gateway.broker_config import BrokerUser, MosquittoFiles, build_mosquitto_files, mosquitto_hash

log = get_logger("gateway.cli")
devices_app = typer.Typer(help="Devices and their broker credentials.", no_args_is_help=True)


@devices_app.callback()
def devices() -> None:
    """Devices and their broker credentials."""
    # A callback keeps this a command group even while it has a single command.


async def load_mosquitto_files(
    database_url: str, service_users: list[BrokerUser]
) -> MosquittoFiles:
    """Read enabled devices and build the password file and ACL (disabled devices get no login)."""
    from anxin.db import make_engine, make_sessionmaker

    engine = make_engine(database_url, pool_size=1, max_overflow=0)
    try:
        async with make_sessionmaker(engine)() as session:
            rows = await session.execute(
                select(col(Device.id), col(Device.password_hash))
                .where(col(Device.enabled).is_(True))
                .order_by(col(Device.id))
            )
            devices = [(str(i), str(h)) for i, h in rows]
    finally:
        await engine.dispose()
    # PBKDF2 for the service users only; device hashes are stored ready-made.
    return build_mosquitto_files(devices, service_users)


def _write_private(path: Path, content: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    # Hashes only, but still nobody else's business; replace atomically so a broker reloading
    # (SIGHUP) never reads half a file.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(content)
    tmp.replace(path)


def _service_users(specs: list[str], settings: Settings) -> list[BrokerUser]:
    users: list[BrokerUser] = []
    for spec in specs:
        name, sep, password = spec.partition("=")
        if not sep or not name or not password:
            raise typer.BadParameter(f"--service-user takes NAME=PASSWORD, got {name!r}")
        users.append(BrokerUser(name, mosquitto_hash(password)))
    if not users and settings.mqtt_url is not None:
        # The platform's own login, as it connects today.
        address = BrokerAddress.parse(settings.mqtt_url.get_secret_value())
        if address.username and address.password:
            users.append(BrokerUser(address.username, mosquitto_hash(address.password)))
    return users


@devices_app.command("export-mosquitto")
def export_mosquitto(
    password_file: Annotated[
        Path | None,
        typer.Option(
            help="Where to write the Mosquitto password file (default: broker-auth/passwd in "
            "the data directory, ANXIN_DATA_DIR)."
        ),
    ] = None,
    acl_file: Annotated[
        Path | None,
        typer.Option(
            help="Where to write the Mosquitto ACL file (default: broker-auth/acl in the data "
            "directory)."
        ),
    ] = None,
    service_user: Annotated[
        list[str] | None,
        typer.Option(
            help="A platform login with full access, NAME=PASSWORD (repeatable). Default: the "
            "user and password of ANXIN_MQTT_URL."
        ),
    ] = None,
) -> None:
    """Write a Mosquitto password file and ACL for every enabled device (username = device id;
    a device may publish only under anxin/v1/dev/{id}/ and read only its own ack and cmd).
    Reload Mosquitto afterwards (SIGHUP) to apply them."""
    from anxin.db import resolve_database_url

    # No logging set-up here: the output is the two files and a line on the console (and a
    # CLI runner in tests must not leave structlog writing to its closed capture stream).
    settings = Settings()
    # The hashes are the devices' logins: by default beside the rest of this deployment's data
    # (./var, git-ignored), never in the repository's deploy/ directory.
    password_file = password_file or settings.data_dir / "broker-auth" / "passwd"
    acl_file = acl_file or settings.data_dir / "broker-auth" / "acl"
    users = _service_users(service_user or [], settings)
    if not users:
        typer.echo(
            "warning: no service user (give --service-user NAME=PASSWORD or credentials in "
            "ANXIN_MQTT_URL): the platform itself will not be able to log in",
            err=True,
        )

    async def main() -> MosquittoFiles:
        url = await resolve_database_url(settings)
        return await load_mosquitto_files(url, users)

    files = asyncio.run(main())
    _write_private(password_file, files.password_file)
    _write_private(acl_file, files.acl_file)
    typer.echo(
        f"wrote {password_file} ({files.devices} devices, {len(users)} service users) "
        f"and {acl_file}"
    )
    if files.skipped:
        typer.echo(
            f"warning: {len(files.skipped)} devices have no broker-ready ($7$) password hash and "
            f"cannot log in, e.g. {', '.join(files.skipped[:5])}",
            err=True,
        )
