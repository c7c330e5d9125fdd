"""Logging for every ``validator`` process: our structlog events and the standard library's
logging (py-libp2p, aiohttp, asyncio, trio, urllib3, solana-py, ``warnings``) through one
renderer, to stderr.

Formats (``--log-format``, or ``log_format`` in a validator's config.toml):

- ``json``: every line is one JSON object with ``timestamp``, ``level``, ``logger`` and
  ``event``; an exception is a structured ``exception`` field (type, message, frames; no
  locals, which could hold key material), never a multi-line traceback. The command's
  result lines on stdout (``emit``: ``provide``'s multiaddr, ``localchain``'s URL,
  ``devnet``'s URLs) are JSON objects too, so a collector of stdout and stderr (journald,
  ``validator devnet``'s log files) holds nothing else.
- ``console``: human-readable, coloured on a terminal.
- ``auto`` (default): ``json`` logs unless stderr is a terminal. Result lines stay plain
  text on stdout: that is the interface scripts read (the first line of ``provide`` is its
  multiaddr), and one-line usage errors stay plain too.

``--log-level`` (debug, info, warning, error) filters our loggers (``validator``, ``p2p``,
``proofs``, ``programs``). Other libraries log warnings and errors only: py-libp2p at info
is a line per stream.

Raw 32-byte keys given as ``peer``, ``provider`` and the other key fields below are printed
in base58, the form the HTTP API uses, so a log line can be pasted into ``/providers/{key}``.
Uncaught exceptions (main thread, other threads, "exception ignored" at shutdown) are logged
as one line each; a library message with a traceback formatted into its text gets the same
structured ``exception``. Once a process is stopping, py-libp2p's warnings about connections
it can no longer accept are expected and logged at debug.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import re
import sys
import threading
from typing import Any, MutableMapping

import base58
import structlog
from structlog.tracebacks import ExceptionDictTransformer

FORMATS = ("auto", "json", "console")
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR}
OUR_LOGGERS = ("validator", "p2p", "proofs", "programs")
LIBRARY_LEVEL = logging.WARNING
# Fields that carry a public key: raw bytes there are printed as the API prints keys.
KEY_FIELDS = frozenset({"peer", "provider", "offender", "validator", "signing_key", "payout",
                        "prober"})

_stdout_json = False  # set by configure_logging: whether `emit` writes JSON
_threshold = logging.INFO  # set by configure_logging: our loggers' level
_stopping = False  # set by mark_stopping: the process has begun to shut down
_TRACEBACK_HEAD = "Traceback (most recent call last):"
_FRAME = re.compile(r'^\s*File "(?P<filename>[^"]*)", line (?P<lineno>\d+), in (?P<name>.*)$')


class _CurrentStderr:
    """Writes to whatever `sys.stderr` is at each call, not the stream seen at configure
    time (a swapped or closed stream, as under a test runner, would break every log call)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """The one handler on the root logger (and logging's last resort: py-libp2p's loggers do
    not propagate and have no handler of their own)."""

    def __init__(self) -> None:
        super().__init__(_CurrentStderr())  # type: ignore[arg-type]

    def handleError(self, record: logging.LogRecord) -> None:
        """A record that cannot be formatted (a library's format string and arguments do not
        match): one line saying so, not logging's traceback on stderr."""
        try:
            line = json.dumps({"msg": repr(record.msg)[:500], "args": repr(record.args)[:500],
                               "event": "log_record_unformattable", "level": "error",
                               "logger": record.name, "timestamp": _now()})
            self.stream.write(line + "\n")
            self.flush()
        except Exception:  # noqa: BLE001 - nothing is left to report it to
            pass


def base58_keys(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> Any:
    """structlog processor: raw 32-byte keys in ``KEY_FIELDS`` as base58."""
    for field in KEY_FIELDS.intersection(event_dict):
        value = event_dict[field]
        if isinstance(value, (bytes, bytearray)) and len(value) == 32:
            event_dict[field] = base58.b58encode(bytes(value)).decode()
    return event_dict


def structured_traceback_text(_logger: Any, _method: str,
                              event_dict: MutableMapping[str, Any]) -> Any:
    """structlog processor: a library that formats a traceback into its message (py-libp2p's
    swarm does) gets the same one-line form as our exceptions: the message up to the
    traceback as ``event``, and ``exception`` with the frames and the final exception."""
    event = event_dict.get("event")
    if not isinstance(event, str) or _TRACEBACK_HEAD not in event:
        return event_dict
    head, _, text = event.partition(_TRACEBACK_HEAD)
    lines = [line for line in text.splitlines() if line.strip()]
    frames = [m.groupdict() for m in map(_FRAME.match, lines) if m]
    for frame in frames:
        frame["lineno"] = int(frame["lineno"])
    last = lines[-1].strip() if lines else ""
    exc_type, _, exc_value = last.partition(": ")
    event_dict["event"] = head.strip() or "traceback"
    event_dict["exception"] = [{"exc_type": exc_type, "exc_value": exc_value,
                                "frames": frames, "from_text": True}]
    return event_dict


class _ShutdownNoise(logging.Filter):
    """Once the process is stopping, py-libp2p's warnings about connections it can no longer
    set up ("Cannot schedule task after service has stopped": a peer dialled in while the
    swarm was closing) are expected: logged at debug, not as warnings."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _stopping and record.name.startswith("libp2p") and record.levelno < logging.ERROR:
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return _threshold <= logging.DEBUG
        return True


def mark_stopping() -> None:
    """The process has begun to shut down (``validator.lifecycle``)."""
    global _stopping
    _stopping = True


def uses_json(fmt: str) -> bool:
    """Whether logs on stderr are JSON lines for ``fmt`` (see the module docstring)."""
    return fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())


def log_level(level: int | str) -> int:
    if isinstance(level, int):
        return level
    try:
        return LEVELS[level.lower()]
    except KeyError:
        raise ValueError(f"log level {level!r}: expected one of {', '.join(LEVELS)}") from None


def configure_logging(fmt: str = "auto", level: int | str = logging.INFO) -> None:
    """Set up structlog and the standard library's logging for this process (idempotent:
    a second call replaces the first; loggers used before it keep the first settings)."""
    global _stdout_json, _threshold
    if fmt not in FORMATS:
        raise ValueError(f"log format {fmt!r}: expected one of {', '.join(FORMATS)}")
    threshold = log_level(level)
    use_json = uses_json(fmt)
    _stdout_json = fmt == "json"
    _threshold = threshold
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        base58_keys,
        structured_traceback_text,
    ]
    rendering: list[Any] = (
        [structlog.processors.ExceptionRenderer(ExceptionDictTransformer(show_locals=False)),
         structlog.processors.JSONRenderer()] if use_json
        else [structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())])
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=True,
    )
    handler = _Handler()
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *rendering]))
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(max(threshold, LIBRARY_LEVEL))
    for name in OUR_LOGGERS:
        logging.getLogger(name).setLevel(threshold)
    handler.addFilter(_ShutdownNoise())
    logging.lastResort = handler
    logging.captureWarnings(True)
    _install_hooks()


def emit(event: str, text: str, **fields: Any) -> None:
    """A command's result line on stdout: ``text`` as it is, or with ``--log-format json``
    one JSON object (``event``, ``level``, ``logger``, ``timestamp`` and ``fields``)."""
    if _stdout_json:
        body: dict[str, Any] = base58_keys(None, "info", dict(fields))
        body.update(event=event, level="info", logger="validator.cli", timestamp=_now())
        text = json.dumps(body, default=str)
    print(text, flush=True)


def _now() -> str:
    """Now as structlog's TimeStamper(fmt="iso", utc=True) writes it."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat().replace("+00:00", "Z")


def emit_error(event: str, message: str, **fields: Any) -> None:
    """A one-line operator error on stderr as a JSON object (``--log-format json``)."""
    body = {**fields, "message": message, "event": event, "level": "error",
            "logger": "validator.cli", "timestamp": _now()}
    print(json.dumps(body, default=str), file=sys.stderr, flush=True)


def add_log_options(parser: argparse.ArgumentParser, *, format_default: str = "auto",
                    format_help: str | None = None) -> None:
    """``--log-level`` and ``--log-format`` for a long-running command."""
    parser.add_argument("--log-level", default="info", choices=tuple(LEVELS),
                        help="threshold of our loggers; other libraries log warnings and "
                             "errors only")
    parser.add_argument("--log-format", default=format_default, choices=FORMATS,
                        help=format_help or "json: every line on stderr and stdout one JSON "
                                            "object; console: for people; auto: JSON logs "
                                            "unless stderr is a terminal")


# -- what nobody caught ----------------------------------------------------------------------
def _log() -> Any:
    return structlog.get_logger("validator")


def _excepthook(exc_type: type[BaseException], exc: BaseException, tb: Any) -> None:
    if issubclass(exc_type, KeyboardInterrupt):  # Ctrl-C: nothing went wrong
        return
    _log().critical("uncaught_exception", exc_info=(exc_type, exc, tb))


def _thread_excepthook(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit or args.exc_value is None:
        return
    _log().error("uncaught_exception_in_thread",
                 thread=args.thread.name if args.thread else None,
                 exc_info=(args.exc_type, args.exc_value, args.exc_traceback))


def _unraisablehook(unraisable: Any) -> None:
    exc = unraisable.exc_value
    _log().warning("exception_ignored", message=unraisable.err_msg or None,
                   object=repr(unraisable.object)[:200],
                   exc_info=(unraisable.exc_type, exc, unraisable.exc_traceback)
                   if exc is not None else None)


def _install_hooks() -> None:
    sys.excepthook = _excepthook
    threading.excepthook = _thread_excepthook
    sys.unraisablehook = _unraisablehook
