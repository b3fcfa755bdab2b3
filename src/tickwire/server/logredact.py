"""No credential reaches a log line: redaction of every record the process logs.

Credentials may travel in query strings (``?token=``, ``?id=&n=&h=``), and any log line
can carry a URL: aiohttp's access log, its error log (an over-long request line is
printed with the start of the URL), a Referer header, a traceback. So redaction is not a
filter on one logger but the process's log record factory: every record, from every
logger, has its message (and its formatted exception) redacted when it is made.

A parameter is recognised by its name *after* percent-decoding, as the server decodes it
(``?%74oken=`` is ``token``). A request that aiohttp refuses before routing (line too
long, bad headers) is logged on one line without a traceback: it is the client's error.
"""

from __future__ import annotations

import logging
import re
import traceback
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote_plus

from aiohttp.http_exceptions import HttpProcessingError

#: Query parameters that carry credentials (native/prophit ``token``, InstaMrkt ``h``, …).
CREDENTIAL_PARAMS = frozenset({"token", "jwt", "h", "session_key", "secret", "password"})
REDACTED = "<redacted>"

# One query parameter: a separator, a name (possibly percent-encoded), "=", a value up to
# the next separator or the end of the URL in a log line (space, quote, bracket).
_PARAM = re.compile(r"(?P<head>[?&;](?P<name>[^=&;\s\"'?#<>]{1,64})=)(?P<value>[^&;\s\"'#<>]*)")


def _is_credential(name: str) -> bool:
    for _ in range(3):  # also what a double (or triple) encoding hides
        if name.lower() in CREDENTIAL_PARAMS:
            return True
        decoded = unquote_plus(name)
        if decoded == name:
            return False
        name = decoded
    return name.lower() in CREDENTIAL_PARAMS


def _replace(match: re.Match[str]) -> str:
    if match.group("value") and _is_credential(match.group("name")):
        return match.group("head") + REDACTED
    return match.group(0)


def redact_credentials(text: str) -> str:
    """``text`` with the values of credential query parameters replaced by ``<redacted>``."""
    if "=" not in text:
        return text
    return _PARAM.sub(_replace, text)


def redact_record(record: logging.LogRecord) -> logging.LogRecord:
    """Redact ``record`` in place (its message, arguments merged in, and its exception)."""
    if record.args:
        try:
            record.msg = record.getMessage()
            record.args = None
        except (TypeError, ValueError):  # a malformed call: leave it to the formatter
            return record
    if isinstance(record.msg, str):
        record.msg = redact_credentials(record.msg)
    exc = record.exc_info[1] if record.exc_info else None
    if isinstance(exc, HttpProcessingError):
        # aiohttp refused a request it could not parse: the client's error, one line
        record.msg = redact_credentials(f"{record.msg}: {exc.code} {exc.message}".strip())
        record.exc_info = None
        record.exc_text = None
        if record.levelno > logging.INFO:
            record.levelno, record.levelname = logging.INFO, "INFO"
    elif record.exc_info and record.exc_info[0] is not None:
        record.exc_text = redact_credentials(
            "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
        )
    return record


_installed: list[Callable[..., logging.LogRecord]] = []


def install() -> None:
    """Make every log record of this process redacted (once; keeps any existing factory)."""
    if _installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        return redact_record(previous(*args, **kwargs))

    _installed.append(factory)
    logging.setLogRecordFactory(factory)
