"""Every log line is one JSON object (stdlib logging only): the gateway's, uvicorn's, libraries'.

``configure`` installs one stderr handler on the root logger with :class:`JsonFormatter`;
uvicorn runs with ``log_config=None``, so its loggers propagate there too, and so do Python
warnings and uncaught exceptions (main thread, other threads, unraisable ones in
destructors). A line carries:

* ``time`` (unix seconds, like the access log), ``level``, ``logger``, ``message``;
* ``request_id`` when there is one: a call site's ``extra={"request_id": ...}``, else the
  request being served (``context.current_request_id``, set per request by the proxy, so a
  library's line inside a request carries it too);
* ``exception``: ``{"type", "message", "traceback"}`` — the traceback is a JSON string,
  never raw multi-line text on stderr;
* the access log's fields at top level (``extra={"fields": {...}}``: named fields only).

The access log's line skips the ``LogRecord`` (``write_fields``): the same line, on the same
handler's stream under its lock, when that handler alone would have written it.

Nothing else a record carries is written (uvicorn's ``color_message`` and any other ``extra``
stay out), so a library cannot put a value on the line by accident.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import IO, Any

from gateway.context import current_request_id

_NOISY = ("httpx", "httpcore")
#: One encoder for every line (``json.dumps`` with options builds a new one per call).
_ENCODER = json.JSONEncoder(separators=(",", ":"), default=repr)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return _ENCODER.encode(
            _line(
                record.created,
                record.levelname,
                record.name,
                record.getMessage(),
                getattr(record, "request_id", None),
                getattr(record, "fields", None),
                record.exc_info,
                record.stack_info,
            )
        )


def _line(
    created: float,
    level: str,
    logger: str,
    message: str,
    request_id: object,
    fields: object,
    exc_info: Any = None,
    stack_info: str | None = None,
) -> dict[str, Any]:
    """A line's object: what :class:`JsonFormatter` encodes, and :func:`write_fields` too."""
    line: dict[str, Any] = {
        "time": round(created, 3),
        "level": level,
        "logger": logger,
        "message": message,
    }
    request_id = request_id or current_request_id.get()
    if request_id is not None:
        line["request_id"] = request_id
    # The access log's dict first: an ABC isinstance check costs a Python-level call.
    if type(fields) is dict or isinstance(fields, Mapping):
        line.update(fields)
    if exc_info and exc_info[1] is not None:
        line["exception"] = _exception(exc_info)
    if stack_info:
        line["stack"] = stack_info
    return line


def _sole_handler(logger: logging.Logger, level: int) -> logging.StreamHandler[Any] | None:
    """The handler a ``level`` record of ``logger`` reaches when it is the only one and
    writes it as :class:`JsonFormatter` does with nothing in between (no filter on the logger
    or the handler, a plain ``StreamHandler``): ``configure``'s. Else None (the record must
    go through ``logging``: e.g. pytest's ``caplog`` handler beside it, or another one)."""
    if logger.filters:
        return None
    sole: logging.Handler | None = None
    c: logging.Logger | None = logger
    while c is not None:
        for handler in c.handlers:
            if sole is not None:
                return None
            sole = handler
        c = c.parent if c.propagate else None
    if (
        type(sole) is logging.StreamHandler
        and type(sole.formatter) is JsonFormatter
        and not sole.filters
        and level >= sole.level
    ):
        return sole
    return None


def direct_handler(logger: logging.Logger, level: int) -> logging.StreamHandler[Any] | None:
    """The handler a ``level`` line of ``logger`` is written to straight (``_sole_handler``),
    or None: the line goes through ``logging`` (or, not enabled, nowhere)."""
    if not logger.isEnabledFor(level):
        return None
    return _sole_handler(logger, level)


def write_fields(logger: logging.Logger, level: int, message: str, fields: dict[str, Any]) -> None:
    """``logger.log(level, message, extra={"fields": fields})``, the same line written to
    the same stream (under the handler's lock, flushed), without building a ``LogRecord``
    when only ``configure``'s handler would see it (``_sole_handler``)."""
    if not logger.isEnabledFor(level):
        return
    handler = _sole_handler(logger, level)
    if handler is None:
        logger.log(level, message, extra={"fields": fields})
        return
    text = _ENCODER.encode(
        _line(time.time(), logging.getLevelName(level), logger.name, message, None, fields)
    )
    write_text(handler, logger, level, message, text, lambda: fields)


def write_text(
    handler: logging.StreamHandler[Any],
    logger: logging.Logger,
    level: int,
    message: str,
    text: str,
    fields: Callable[[], dict[str, Any]],
) -> None:
    """``text``, the line :class:`JsonFormatter` writes for ``message`` and ``fields()``
    already encoded, written to ``direct_handler``'s ``handler`` as ``StreamHandler.emit``
    does (its lock, the terminator, flushed; a failure to ``handleError`` with the record,
    built then)."""
    with handler.lock:  # type: ignore[union-attr]
        try:
            stream = handler.stream
            stream.write(text + handler.terminator)
            flush = getattr(stream, "flush", None)  # StreamHandler.flush, the lock held
            if flush is not None:
                flush()
        except RecursionError:
            raise
        except Exception:
            handler.handleError(
                logger.makeRecord(
                    logger.name, level, "", 0, message, (), None, extra={"fields": fields()}
                )
            )


def _exception(exc_info: Any) -> dict[str, str]:
    kind, exc, tb = exc_info
    return {
        "type": kind.__qualname__,
        "message": str(exc),
        "traceback": "".join(traceback.format_exception(kind, exc, tb)).rstrip(),
    }


def level_from(name: str | None) -> tuple[int, str | None]:
    """The level called ``name`` (case-insensitive; default INFO), and a problem if unknown."""
    wanted = (name or "INFO").strip().upper()
    level = logging.getLevelNamesMapping().get(wanted)
    if level is None:
        return logging.INFO, f"unknown GATEWAY_LOG_LEVEL {name!r}: using INFO"
    return level, None


def configure(level_name: str | None, stream: IO[str] | None = None) -> None:
    """Route every log record, warning and uncaught exception through one JSON handler."""
    level, problem = level_from(level_name)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # The line carries none of the process, thread, task or call-site fields: not gathering
    # them per record saves a getpid() syscall, a thread lookup and a frame walk on every line
    # (the access log writes one per request).
    logging.logProcesses = False
    logging.logThreads = False
    logging.logMultiprocessing = False
    if hasattr(logging, "logAsyncioTasks"):  # Python 3.12+
        logging.logAsyncioTasks = False
    logging._srcfile = None
    for noisy in _NOISY:
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    logging.captureWarnings(True)
    _hook_uncaught()
    if problem:
        logging.getLogger("gateway.log").warning(problem)


_crash = logging.getLogger("gateway.uncaught")


def _excepthook(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    _crash.critical("uncaught exception", exc_info=(kind, exc, tb))


def _thread_excepthook(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit or args.exc_value is None:
        return
    name = args.thread.name if args.thread is not None else "?"
    _crash.error(
        "uncaught exception in thread %s",
        name,
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
    )


def _unraisablehook(args: Any) -> None:
    exc = args.exc_value
    message = args.err_msg or "Exception ignored in"
    _crash.error(
        "%s: %r",
        message,
        args.object,
        exc_info=(args.exc_type, exc, args.exc_traceback) if exc is not None else None,
    )


def _hook_uncaught() -> None:
    sys.excepthook = _excepthook
    threading.excepthook = _thread_excepthook
    sys.unraisablehook = _unraisablehook
