"""Logging for every process (web, worker, CLI): JSON lines, request ids, redaction.

- One handler on the root logger writes one JSON object per line to stderr
  (python-json-logger) with ``time`` (ISO 8601, UTC), ``level``, ``logger``,
  ``message``, ``request_id``, ``process`` and any ``extra=`` fields. Stderr,
  so that a CLI command's own output on stdout (``audit export``) stays clean
  when piped; containers collect both streams.
- A request id travels in a :mod:`contextvars` variable: :func:`init_app` takes
  it from a valid ``X-Request-ID`` header (or makes one) for each request and
  returns it in the response; the worker wraps each job in
  :func:`request_id_scope` with the id of the request that queued it.
- Redaction happens where no handler can bypass it: :func:`install_redaction`
  puts a log record factory in place, so every record any logger of the process
  creates (the application's, gunicorn's, a library's) has its message, exception
  and stack text masked before any handler sees it, whatever that handler's
  format; :class:`RedactionFilter` on the JSON handler also masks the ``extra=``
  fields that handler writes. Sensitive keys
  (password, PIN, secret, token, authorization, names, date of birth, address,
  post code, email, phone) have their values replaced by ``[redacted]``, in
  ``extra`` fields and in ``key=value`` text; values that look like an email,
  a phone number, a JWT, a bearer token, a platform token (``SRX...``), a Fernet
  token, a date of birth or a UK post code are masked wherever they appear, and
  so are the bound parameters SQLAlchemy prints in its error texts.
  Free-text names cannot be recognised by pattern: code logs ids, never
  patients (see design.md), and the filter is the safety net.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, TextIO

from pythonjsonlogger.json import JsonFormatter

if TYPE_CHECKING:
    from flask import Flask

    from app.foundation.config import Settings

REQUEST_ID_HEADER = "X-Request-ID"
MAX_REQUEST_ID = 100
REDACTED = "[redacted]"

_request_id: ContextVar[str | None] = ContextVar("erx_request_id", default=None)
log = logging.getLogger("app.requests")


# -- request ids -------------------------------------------------------------------------


def new_request_id() -> str:
    """Return a fresh request id: 32 lowercase hex characters (128 random bits, like a uuid4's hex)."""
    return os.urandom(16).hex()


def valid_request_id(value: str | None) -> bool:
    """True when ``value`` may be used as a request id: 1-100 printable ASCII characters.

    Anything else (control characters could forge log lines; long values bloat
    every line) is replaced by a new id rather than refused.
    """
    return bool(value) and len(value) <= MAX_REQUEST_ID and value.isascii() and value.isprintable()  # type: ignore[union-attr]


def current_request_id() -> str | None:
    """Return the request id of the current request or job, or None outside one."""
    return _request_id.get()


@contextmanager
def request_id_scope(request_id: str | None) -> Iterator[str]:
    """Run a block with ``request_id`` as the current request id; restored afterwards.

    The worker uses it around each outbox job, with the id stored when the
    request queued the job, so the job's log lines carry it. An invalid or
    missing id is replaced by a new one; yields the id in effect.
    """
    rid = request_id if valid_request_id(request_id) else new_request_id()
    token = _request_id.set(rid)
    try:
        yield rid
    finally:
        _request_id.reset(token)


# -- redaction ---------------------------------------------------------------------------

# Keys whose values are always secret or PHI (matched case-insensitively, as a whole
# key or as its suffix: ``patient_email``, ``X-Api-Token``, ``address_line1``).
_SENSITIVE_KEY = re.compile(
    r"(?:^|[_\-.])(?:passwords?|passwd|pwd|pins?|secure_pin|secrets?|client_secret|tokens?|access_token|"
    r"refresh_token|authorization|auth|api_key|apikey|cookies?|emails?|phones?|mobile|first_name|last_name|"
    r"full_name|given_name|family_name|patient_name|date_of_birth|dob|birth_date|address\w*|"
    r"post_code|postcode|zip)(?:_enc)?$",
    re.IGNORECASE,
)
# ``key=value`` / ``key: value`` / ``"key": "value"`` in text; the value runs to the next
# ``word=`` pair, a comma, semicolon, closing brace or the end of the line. Any key matches
# here; the replacement keeps the pair unless the key is sensitive (one cheap scan instead
# of an alternation tried at every position).
_KEY_VALUE = re.compile(
    r"""(?P<key>(?<![\w\-])["']?(?P<name>[A-Za-z_][\w\-]*)["']?)(?P<sep>\s*[=:]\s*)"""
    r"""(?P<value>"[^"]*"|'[^']*'|[^\s,;}\]]+(?:\s+(?![\w\-]+\s*[=:])[^\s,;}\]=:]+)*)"""
)
_HAS_DIGIT = re.compile(r"\d")


# (cheap precondition, pattern, replacement). Order matters: the longer, more specific
# shapes first. The preconditions skip a pattern when the text cannot contain its shape.
_VALUE_PATTERNS: tuple[tuple[Any, re.Pattern[str], str], ...] = (
    # SQLAlchemy error texts list the statement's bound values (names, addresses) on one line.
    (
        lambda t: "[parameters:" in t,
        re.compile(r"\[parameters: [^\n]*"),
        f"[parameters: {REDACTED}]",
    ),
    # Authorization header values.
    (
        lambda t: "earer" in t or "asic" in t or "EARER" in t or "ASIC" in t,
        re.compile(r"\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=\-]+", re.IGNORECASE),
        r"\1 " + REDACTED,
    ),
    # JWTs: three base64url parts, the first a JSON header ("eyJ").
    (
        lambda t: "eyJ" in t,
        re.compile(r"\beyJ[A-Za-z0-9_\-]*\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*"),
        REDACTED,
    ),
    # Fernet tokens (encrypted credentials): version byte 0x80 -> "gAAAAA".
    (lambda t: "gAAAAA" in t, re.compile(r"\bgAAAAA[A-Za-z0-9_\-]+=*"), REDACTED),
    # The platform's secure prescription token (contract: "SRX" + alphanumerics).
    (lambda t: "SRX" in t, re.compile(r"\bSRX[A-Z0-9]{4,}\b"), REDACTED),
    (
        lambda t: "@" in t,
        re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}"),
        REDACTED,
    ),
    # UK phone numbers (07xxx xxxxxx, +44 7xxx xxxxxx, 01/02/03 landlines) and other
    # international numbers written with a leading "+".
    (
        _HAS_DIGIT.search,
        re.compile(r"(?<![\w+])(?:\+44\s?\(?0?\)?\s?|0)[1-9](?:[\s\-]?\d){8,9}(?![\w])"),
        REDACTED,
    ),
    (lambda t: "+" in t, re.compile(r"(?<![\w+])\+[1-9](?:[\s\-]?\d){7,13}(?![\w])"), REDACTED),
    # Dates of birth: a bare calendar date. A date followed by a time ("2026-11-20T10:15Z",
    # "2026-11-20 10:15") is a timestamp and stays readable.
    (lambda t: "-" in t, re.compile(r"\b(?:19|20)\d{2}-[01]\d-[0-3]\d\b(?![T ]\d)"), REDACTED),
    (lambda t: "/" in t, re.compile(r"\b[0-3]?\d/[01]?\d/(?:19|20)\d{2}\b"), REDACTED),
    # UK post codes (BS8 2BY, M14 5TB, EH9 1HN), upper case as written on letters.
    (_HAS_DIGIT.search, re.compile(r"\b[A-Z]{1,2}\d[A-Z\d]?\s?\d[ABD-HJLNP-UW-Z]{2}\b"), REDACTED),
)


def _mask_pair(match: re.Match[str]) -> str:
    if not is_sensitive_key(match.group("name")):
        return match.group(0)
    return f"{match.group('key')}{match.group('sep')}{REDACTED}"


def redact_text(text: str) -> str:
    """Return ``text`` with secrets and PHI masked as ``[redacted]`` (rules: module docstring)."""
    if not text:
        return text
    if "=" in text or ":" in text:
        text = _KEY_VALUE.sub(_mask_pair, text)
    for applies, pattern, replacement in _VALUE_PATTERNS:
        if applies(text):
            text = pattern.sub(replacement, text)
    return text


def is_sensitive_key(key: str) -> bool:
    """True when a field named ``key`` holds a secret or PHI, whatever its value."""
    return bool(_SENSITIVE_KEY.search(key))


def redact_value(value: Any, *, key: str | None = None) -> Any:
    """Return ``value`` redacted: ``[redacted]`` under a sensitive ``key``, masked text otherwise.

    Dicts, lists and tuples are walked (their keys checked too); numbers, booleans
    and None pass through unless the key is sensitive; other objects are
    rendered with ``str`` first, so their text is masked too.
    """
    if key is not None and is_sensitive_key(key):
        return None if value is None else REDACTED
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: redact_value(v, key=str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_value(v) for v in value]
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return redact_text(str(value))


# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
}


_REDACTED_MARK = "_erx_redacted"


def _redact_record_text(record: logging.LogRecord) -> None:
    """Mask ``record``'s message, exception and stack text in place (once: marks the record)."""
    if getattr(record, _REDACTED_MARK, False):
        return
    if isinstance(record.msg, dict):
        record.msg = redact_value(record.msg)
    else:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not lose the line
            message = f"{record.msg!s} {record.args!r}"
        record.msg, record.args = redact_text(message), None
    if record.exc_info:
        # Exception texts can carry SQL parameters or request data: format once, mask.
        record.exc_text = redact_text(logging.Formatter().formatException(record.exc_info))
        record.exc_info = None
    elif record.exc_text:
        record.exc_text = redact_text(record.exc_text)
    if record.stack_info:
        record.stack_info = redact_text(record.stack_info)
    record.__dict__[_REDACTED_MARK] = True


_RECORD_ATTRS = _RECORD_ATTRS | {_REDACTED_MARK}


class RedactionFilter(logging.Filter):
    """Masks a record's message, ``extra`` fields, exception and stack text.

    On the JSON handler, for the ``extra=`` fields it writes (the record factory of
    :func:`install_redaction` has masked the text already; done again here only for
    a record made without it). Never drops a record: always returns True.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        _redact_record_text(record)
        for key in [k for k in vars(record) if k not in _RECORD_ATTRS]:
            setattr(record, key, redact_value(getattr(record, key), key=key))
        return True


_FACTORY_MARK = "_erx_redacting_factory"


def install_redaction() -> None:
    """Make every log record of this process redacted at creation (idempotent).

    Wraps the current :func:`logging.getLogRecordFactory`: each record's message
    (with its arguments), exception and stack text are masked (:func:`redact_text`)
    before any filter or handler sees it, so a handler someone else adds (gunicorn's,
    a library's, a plain-text one) cannot write the unmasked text. ``extra=`` fields
    are set on a record after the factory returns, so :class:`RedactionFilter` on the
    JSON handler masks those.
    """
    current = logging.getLogRecordFactory()
    if getattr(current, _FACTORY_MARK, False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = current(*args, **kwargs)
        _redact_record_text(record)
        return record

    setattr(factory, _FACTORY_MARK, True)
    logging.setLogRecordFactory(factory)


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` (the current request's or job's id, or None) to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = current_request_id()
        return True


# -- configuration -----------------------------------------------------------------------


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that looks ``sys.stderr`` up at each write.

    Test runners and CLI runners replace ``sys.stderr`` after start-up; holding the
    original object would write to a closed or stale stream.
    """

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass


def json_formatter() -> logging.Formatter:
    """Return the JSON-lines formatter: time (UTC ISO 8601), level, logger, message, request_id, process."""
    return JsonFormatter(
        "%(levelname)s %(name)s %(message)s %(request_id)s %(process)d",
        rename_fields={"levelname": "level", "name": "logger"},
        timestamp="time",
        json_ensure_ascii=False,
    )


_HANDLER_MARK = "_erx_json_handler"


QUIET_LIBRARIES = ("pika",)
"""Libraries whose own logging :func:`configure_logging` silences (they raise what matters)."""


def json_handler(stream: TextIO | None = None) -> logging.Handler:
    """The JSON-lines handler (request id, redaction, :func:`json_formatter`) on ``stream``.

    Default stream: ``sys.stderr`` looked up at each write. Also installs the redacting
    record factory (:func:`install_redaction`). gunicorn.conf.py names this function in
    its ``logconfig_dict`` so that gunicorn's own lines take the same path.
    """
    install_redaction()
    handler: logging.Handler = _StderrHandler() if stream is None else logging.StreamHandler(stream)
    setattr(handler, _HANDLER_MARK, True)
    handler.addFilter(RequestIdFilter())
    handler.addFilter(RedactionFilter())
    handler.setFormatter(json_formatter())
    return handler


def configure_logging(
    settings: Settings | None = None,
    *,
    stream: TextIO | None = None,
    level: str | int | None = None,
) -> logging.Handler:
    """Send every log record of this process as a redacted JSON line to ``stream`` (default stderr).

    ``settings``: its ``log_level`` (``LOG_LEVEL``, default INFO) sets the root
    level unless ``level`` is given. Idempotent: a handler installed by an
    earlier call (or by gunicorn.conf.py through :func:`json_handler`) is replaced,
    handlers installed by others (pytest's capture) are left alone; every record is
    redacted at creation either way (:func:`install_redaction`). Returns the
    installed handler.
    """
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(old)
    handler = json_handler(stream)
    root.addHandler(handler)
    chosen = level if level is not None else getattr(settings, "log_level", None) or "INFO"
    root.setLevel(chosen.upper() if isinstance(chosen, str) else chosen)
    for name in QUIET_LIBRARIES:
        # pika narrates every connection (INFO) and logs each refused one as ERROR before
        # raising it; our code logs the failures it handles, once, with their ids.
        logging.getLogger(name).setLevel(logging.CRITICAL)
    return handler


class RequestIdMiddleware:
    """WSGI middleware giving each request a request id (see :func:`init_app`).

    A middleware rather than Flask ``before``/``after``/``teardown_request`` hooks:
    one call per request, no ``flask.g`` or proxy lookups, and the header reaches
    every response, error pages included. ``wsgi_app``: the WSGI callable to wrap.
    """

    def __init__(self, wsgi_app: Any) -> None:
        self.wsgi_app = wsgi_app

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        supplied = environ.get(_REQUEST_ID_ENVIRON)
        rid = supplied if valid_request_id(supplied) else new_request_id()
        started = time.perf_counter()

        def start_with_id(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            headers.append((REQUEST_ID_HEADER, rid))
            if log.isEnabledFor(logging.DEBUG):
                # DEBUG: gunicorn's access log already records each request (it can print the
                # X-Request-ID response header), and the webhook path is kept free of
                # per-request INFO lines (webhooks/routes.py).
                log.debug(
                    "request",
                    extra={
                        "method": environ.get("REQUEST_METHOD"),
                        # The path as Flask reads it (no query string: it may carry search text).
                        "path": "/"
                        + environ.get("PATH_INFO", "")
                        .encode("latin-1")
                        .decode("utf-8", "replace")
                        .lstrip("/"),
                        "status": int(status[:3]),
                        "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                    },
                )
            return start_response(status, headers, exc_info)

        token = _request_id.set(rid)
        try:
            return self.wsgi_app(environ, start_with_id)
        finally:
            _request_id.reset(token)


_REQUEST_ID_ENVIRON = "HTTP_" + REQUEST_ID_HEADER.upper().replace("-", "_")


def init_app(app: Flask) -> None:
    """Give each request a request id and log one DEBUG summary line per request.

    The id is the caller's ``X-Request-ID`` when valid (:func:`valid_request_id`),
    else a new one; it is echoed in the response's ``X-Request-ID`` header and
    readable through :func:`current_request_id` while the request runs. The
    summary line has method, path (no query string: it may carry search text),
    status and duration in milliseconds. Installed as :class:`RequestIdMiddleware`
    around ``app.wsgi_app``.
    """
    app.wsgi_app = RequestIdMiddleware(app.wsgi_app)  # type: ignore[method-assign]
