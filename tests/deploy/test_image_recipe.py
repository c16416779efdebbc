"""The Dockerfile's recipe, played without a container engine (this machine has none).

Each instruction is carried out as the engine would, inside one directory standing for the
image's file system: `COPY` from the build context (minus .dockerignore) or from the earlier
stage, `RUN` through `sh` with the image's absolute paths moved under that directory, `ENV` and
`WORKDIR` as given. Left out, and said so: the base image itself (the machine's Python 3.11
stands in for python:3.11-slim) and the `RUN` that installs OS packages and adds the user
(tzdata is checked for on the host instead).

What the result must do is what the compose file asks of the image: `anxin --help`, the one-off
`anxin db upgrade` on an empty database, and `anxin run web` answering /healthz and serving the
console — with the package importable only from the copied sources (the recipe uninstalls the
stub it installed dependencies with, so a package missing from the COPY lines fails here).
"""

from __future__ import annotations

import asyncio
import fnmatch
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url

from anxin.broker import free_port

ROOT = Path(__file__).resolve().parents[2]
# The image's absolute paths the recipe writes to; each is moved under the stand-in root.
IMAGE_PATHS = ("/opt/anxin", "/app", "/src", "/var/lib/anxin")


def _instructions(dockerfile: str) -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n", " ", dockerfile)
    found = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def _ignored(relative: str, patterns: list[str]) -> bool:
    parts = relative.split("/")
    for pattern in patterns:
        bare = pattern.removeprefix("**/")
        if fnmatch.fnmatch(relative, pattern) or any(fnmatch.fnmatch(p, bare) for p in parts):
            return True
    return False


def _copy_from_context(source: str, target: Path, patterns: list[str]) -> None:
    path = ROOT / source
    assert path.exists(), f"COPY {source}: not in the build context"
    assert not _ignored(source, patterns), f"COPY {source}: .dockerignore leaves it out"
    if path.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target / path.name if target.is_dir() else target)
        return
    for file in path.rglob("*"):
        relative = file.relative_to(ROOT).as_posix()
        if file.is_file() and not _ignored(relative, patterns):
            out = target / file.relative_to(path)
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(file, out)


class Image:
    """An image's file system in a directory, and the recipe carried out inside it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.env: dict[str, str] = {}
        self.workdir = root
        self.skipped: list[str] = []
        bin_dir = root / "_base" / "bin"
        bin_dir.mkdir(parents=True)
        # The base image's `python` is 3.11: so is the interpreter running these tests.
        (bin_dir / "python").symlink_to(sys.executable)
        self.base_path = f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}"

    def inside(self, text: str) -> str:
        for path in IMAGE_PATHS:
            text = re.sub(
                rf"(?<![\w/]){re.escape(path)}(?=[/\s:;'\"]|$)", f"{self.root}{path}", text
            )
        return text

    def run_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ANXIN_", "VIRTUAL_ENV"))}
        env.update(self.env)
        # The one liberty taken with the recipe: pip may use this machine's download cache
        # (the image build disables it to keep the layer small; the result is the same).
        env.pop("PIP_NO_CACHE_DIR", None)
        env["PATH"] = self.env.get("PATH", "$PATH").replace("$PATH", self.base_path)
        return env

    def build(self, dockerfile: str, patterns: list[str]) -> None:
        for keyword, rest in _instructions(dockerfile):
            if keyword == "ENV":
                for pair in shlex.split(rest):
                    name, _, value = pair.partition("=")
                    self.env[name] = self.inside(value)
            elif keyword == "WORKDIR":
                self.workdir = Path(self.inside(rest))
                self.workdir.mkdir(parents=True, exist_ok=True)
            elif keyword == "COPY":
                *sources, target = rest.split()
                if sources[0].startswith("--from="):
                    continue  # one file system stands for every stage: already in place
                for source in sources:
                    destination = (
                        Path(self.inside(target))
                        if target.startswith("/")
                        else self.workdir / target
                    )
                    if target.endswith("/") or target == "./" or len(sources) > 1:
                        destination.mkdir(parents=True, exist_ok=True)
                        if (ROOT / source).is_dir():
                            destination = destination / Path(source).name
                    _copy_from_context(source, destination, patterns)
            elif keyword == "RUN":
                if "apt-get" in rest or "useradd" in rest:
                    self.skipped.append(rest)
                    continue
                result = subprocess.run(
                    ["sh", "-c", self.inside(rest)],
                    cwd=self.workdir,
                    env=self.run_env(),
                    capture_output=True,
                    text=True,
                    timeout=900,
                )
                assert result.returncode == 0, f"RUN {rest}\n{result.stdout}\n{result.stderr}"

    def anxin(self, *args: str, extra_env: dict[str, str], timeout: float = 120) -> str:
        result = subprocess.run(
            [str(self.root / "opt/anxin/bin/anxin"), *args],
            cwd=self.workdir,
            env={**self.run_env(), **extra_env},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert result.returncode == 0, f"anxin {' '.join(args)}\n{result.stdout}\n{result.stderr}"
        return result.stdout + result.stderr


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Image:
    if shutil.which("sh") is None:
        pytest.skip("no POSIX shell")
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    built = Image(tmp_path_factory.mktemp("image"))
    built.build((ROOT / "Dockerfile").read_text(), patterns)
    return built


def test_the_image_carries_only_the_sources_it_copies(image: Image) -> None:
    app = image.root / "app"
    assert (app / "alembic.ini").is_file()
    assert (app / "alert_service" / "console" / "static").is_dir()
    assert not (app / "tests").exists() and not (app / ".venv").exists()
    # The recipe uninstalls the stub it used for the dependencies: imports come from /app.
    probe = subprocess.run(
        [str(image.root / "opt/anxin/bin/python"), "-c", "import anxin; print(anxin.__file__)"],
        cwd="/",
        env={**image.run_env(), "PYTHONPATH": ""},
        capture_output=True,
        text=True,
    )
    assert probe.returncode != 0, f"anxin is installed in the venv: {probe.stdout}"
    # The skipped RUN installs tzdata for ANXIN_TIMEZONE; its zone must exist there too.
    assert any("tzdata" in step for step in image.skipped)
    assert Path("/usr/share/zoneinfo/Asia/Shanghai").exists()


async def test_the_image_migrates_an_empty_database_and_serves_the_console(
    image: Image, database_url: str
) -> None:
    assert "run" in await asyncio.to_thread(image.anxin, "--help", extra_env={})
    # An empty database beside the test one, as compose's one-off `migrate` step meets it.
    # The URL may name a socket directory (`?host=/tmp/…`, as embedded Postgres does): only
    # its database part is swapped, never the last path segment of the whole string.
    test_db = make_url(database_url)
    plain = test_db.set(drivername="postgresql").render_as_string(hide_password=False)
    name = f"anxin_image_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(plain)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        url = test_db.set(database=name).render_as_string(hide_password=False)
        env = {
            "ANXIN_DATABASE_URL": url,
            "ANXIN_DATA_DIR": str(image.root / "var/lib/anxin"),
            "ANXIN_HTTP_HOST": "127.0.0.1",
        }
        await asyncio.to_thread(image.anxin, "db", "upgrade", extra_env=env)
        migrated = await asyncpg.connect(
            test_db.set(drivername="postgresql", database=name).render_as_string(
                hide_password=False
            )
        )
        try:
            version = await migrated.fetchval("SELECT version_num FROM alembic_version")
        finally:
            await migrated.close()
        assert version, "db upgrade left no schema version"

        port = free_port()
        web = await asyncio.create_subprocess_exec(
            str(image.root / "opt/anxin/bin/anxin"),
            "run",
            "web",
            cwd=image.workdir,
            env={**image.run_env(), **env, "ANXIN_HTTP_PORT": str(port)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 60
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                while True:
                    try:
                        health = await client.get("/healthz")
                        break
                    except httpx.TransportError:
                        assert web.returncode is None, "anxin run web exited"
                        assert time.monotonic() < deadline, "anxin run web did not come up"
                        await asyncio.sleep(0.3)
                assert health.status_code == 200
                console = await client.get("/")
                assert console.status_code == 200 and "安心" in console.text
        finally:
            web.terminate()
            await asyncio.wait_for(web.wait(), 20)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
