"""Logs the page's server cannot be flooded through: a crashed request is one short line, every
logger the server uses is held to LOG_RECORDS_PER_MINUTE short records (BoundedLogFilter), and
its stderr to STDERR_LINES_PER_MINUTE lines (BoundedStream: Gradio prints a traceback per failed
event straight there, past any logger). Standard library only."""

from __future__ import annotations

import io
import logging
import threading
import time

from flaxdigits.serve.page.budgets import (
    ERROR_LOGS_PER_MINUTE,
    LOG_CHARS,
    LOG_RECORDS_PER_MINUTE,
    STDERR_LINES_PER_MINUTE,
)

_error_log = logging.getLogger("flaxdigits.serve.page.guard")
_error_window = {"start": 0.0, "count": 0}
_error_lock = threading.Lock()


def log_error(scope, error: BaseException) -> None:
    """One line per crashed request, at most ERROR_LOGS_PER_MINUTE a minute (no traceback:
    Gradio's routes crash on bodies they cannot parse, and each traceback is ~6 KB)."""
    now = time.monotonic()
    with _error_lock:
        if now - _error_window["start"] >= 60:
            dropped = _error_window["count"] - ERROR_LOGS_PER_MINUTE
            if dropped > 0:
                _error_log.warning("%d more request errors in the last minute not logged", dropped)
            _error_window.update(start=now, count=0)
        _error_window["count"] += 1
        if _error_window["count"] > ERROR_LOGS_PER_MINUTE:
            return
    path = cut(scope.get("path", ""), 100)
    what = cut(str(error), LOG_CHARS)
    _error_log.warning("%s %s: %s: %s", scope.get("method"), path, type(error).__name__, what)


class BoundedLogFilter(logging.Filter):
    """At most per_minute records a minute (all loggers it is on, together), each cut to `limit`
    characters with its traceback reduced to one line; the first record of a minute says how
    many the last one dropped."""

    def __init__(self, limit: int = LOG_CHARS, per_minute: int = LOG_RECORDS_PER_MINUTE):
        super().__init__()
        self.limit, self.per_minute = limit, per_minute
        self._window, self._count, self._dropped = 0.0, 0, 0
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        decided = getattr(record, "flaxdigits_kept", None)
        if decided is not None:  # seen by another handler of ours already
            return decided
        with self._lock:
            if record.created - self._window >= 60:
                self._window, self._count, dropped = record.created, 0, self._dropped
                self._dropped = 0
            else:
                dropped = 0
            self._count += 1
            kept = self._count <= self.per_minute
            self._dropped += not kept
        record.flaxdigits_kept = kept
        if kept:
            self._shorten(record, dropped)
        return kept

    def _shorten(self, record: logging.LogRecord, dropped: int) -> None:
        if record.name == "uvicorn.access":  # its formatter reads the arguments themselves
            return
        try:
            message = record.getMessage()
        except Exception:  # a record whose arguments do not format: keep its template only
            message = str(record.msg)
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            message = f"{message} [{type(error).__name__}: {error}]"
        if dropped:
            message = f"[{dropped:,} log records not written in the last minute] {message}"
        record.msg, record.args = cut(" | ".join(message.splitlines()), self.limit), ()
        record.exc_info = record.exc_text = record.stack_info = None


class BoundedStream(io.TextIOBase):
    """A text stream passing at most per_minute lines a minute to `stream`, each cut to `limit`
    characters: Gradio prints a traceback per failed event straight to stderr, past any logger.
    The first line of a minute says how many the last one dropped."""

    def __init__(self, stream, limit: int = LOG_CHARS, per_minute: int = STDERR_LINES_PER_MINUTE):
        super().__init__()
        self.stream, self.limit, self.per_minute = stream, limit, per_minute
        self._partial = ""
        self._window, self._count, self._dropped = 0.0, 0, 0
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:
            lines = (self._partial + text).split("\n")
            self._partial = lines.pop()
            if len(self._partial) > self.limit:  # no newline for long: a line of its own
                lines.append(self._partial)
                self._partial = ""
            for line in lines:
                self._line(line)
        return len(text)

    def _line(self, line: str) -> None:
        now = time.monotonic()
        if now - self._window >= 60:
            if self._dropped:
                self.stream.write(f"[{self._dropped:,} lines not written in the last minute]\n")
            self._window, self._count, self._dropped = now, 0, 0
        self._count += 1
        if self._count > self.per_minute:
            self._dropped += 1
            return
        self.stream.write(cut(line, self.limit) + "\n")

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return self.stream.isatty()

    def fileno(self) -> int:
        return self.stream.fileno()


def cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... [{len(text) - limit:,} more]"


SERVER_LOGGERS = (
    "",  # the root: Gradio's and anything else's records end up at its handlers
    "uvicorn",
    "uvicorn.error",
    "uvicorn.access",
    "uvicorn.asgi",
    "gradio",
    "httpx",
    "asyncio",
    _error_log.name,
)


def bound_logs(names=SERVER_LOGGERS) -> BoundedLogFilter:
    """Install one BoundedLogFilter on the server's loggers, their handlers and Python's last-resort
    handler (call it once the server has configured its logging: uvicorn replaces handlers)."""
    log_filter = next(
        (f for f in logging.getLogger(names[0]).filters if isinstance(f, BoundedLogFilter)),
        BoundedLogFilter(),
    )
    targets = [logging.lastResort] if logging.lastResort is not None else []
    for name in names:
        logger = logging.getLogger(name)
        targets += [logger, *logger.handlers]
    for target in targets:
        if not any(isinstance(f, BoundedLogFilter) for f in target.filters):
            target.addFilter(log_filter)
    return log_filter
