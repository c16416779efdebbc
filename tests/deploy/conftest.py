"""Logging that survives CLI tests.

anxin.logging binds structlog to the `sys.stderr` of the moment it is configured; a command run
under typer's CliRunner configures it while the runner's temporary stream is in place, and the
runner closes that stream afterwards, so every later log line in the process would raise.
Point logging back at the real stream before and after each test here.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from anxin.logging import configure_logging


@pytest.fixture(autouse=True)
def _logging_to_the_current_stderr() -> Iterator[None]:
    configure_logging("warning")
    yield
    configure_logging("warning")
