"""How lockgate's log records look in the terminal: a readable Rich log in `dev`, one JSON
object per line in `start` (`--log-format`), warnings only with `--quiet`.

Code everywhere logs through the standard `logging` module under `lockgate.*`, with structured
fields in `extra={...}` (run_id, function, app, attempt, reason, ...). The handlers here show
those fields on every line, so a line about a run always carries its run id.
"""

from __future__ import annotations

import logging
import sys
from datetime import datetime, timezone
from typing import Any, TextIO

import orjson

FORMATS = ("rich", "json")

# Attributes every LogRecord has; anything else on a record came in through `extra`.
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}

# Marks records that must appear even with --quiet (the "listening" line, start-up problems).
ALWAYS = {"always": True}


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD and k != "always"}


class _ThresholdFilter(logging.Filter):
    """Records at or above the threshold, plus those marked ALWAYS (the "listening" line, which
    tools wait for, shows whatever --log-level or --quiet say)."""

    def __init__(self, threshold: int) -> None:
        super().__init__()
        self.threshold = threshold

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= self.threshold or getattr(record, "always", False)


class JsonLineHandler(logging.Handler):
    """One JSON object per record: time, level, logger, msg, then the extra fields."""

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__()
        self.stream = stream or sys.stderr

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line: dict[str, Any] = {
                "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds")
                .replace("+00:00", "Z"),
                "level": record.levelname.lower(),
                "logger": record.name,
                "msg": record.getMessage(),
            }
            for key, value in extra_fields(record).items():
                line.setdefault(key, value)
            if record.exc_info:
                line["exc"] = logging.Formatter().formatException(record.exc_info)
            self.stream.write(orjson.dumps(line, default=str).decode() + "\n")
            self.stream.flush()
        except Exception:
            self.handleError(record)


_LEVEL_STYLES = {"DEBUG": "dim", "INFO": "cyan", "WARNING": "yellow", "ERROR": "bold red", "CRITICAL": "bold red"}
# Fields shown first and under short names; the rest follow as key=value.
_SHORT = {"run_id": "run", "function": "fn", "app": "app", "attempt": "attempt", "event_id": "event"}


class RichLineHandler(logging.Handler):
    """A readable, coloured line per record (plain text when stderr is not a terminal). Lines are
    never wrapped, so a run id can be copied or grepped whole."""

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__()
        from rich.console import Console

        self.console = Console(file=stream or sys.stderr, soft_wrap=True, highlight=False)

    def emit(self, record: logging.LogRecord) -> None:
        from rich.markup import escape
        from rich.text import Text

        try:
            when = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
            text = Text(when + " ", style="dim")
            text.append(f"{record.levelname[:4]:<4} ", style=_LEVEL_STYLES.get(record.levelname, ""))
            text.append(record.getMessage())
            fields = extra_fields(record)
            ordered = [k for k in _SHORT if k in fields] + [k for k in fields if k not in _SHORT]
            for key in ordered:
                if fields[key] is not None:
                    text.append(f"  {_SHORT.get(key, key)}={fields[key]}", style="dim")
            if record.exc_info:
                text.append("\n" + escape(logging.Formatter().formatException(record.exc_info)), style="red")
            self.console.print(text)
        except Exception:
            self.handleError(record)


def setup_logging(*, log_format: str = "rich", level: str = "info", quiet: bool = False,
                  stream: TextIO | None = None) -> None:
    """Route every `lockgate.*` and `uvicorn.*` record, and psycopg's warnings (a connection the pool
    drops, say), to one handler in the chosen format."""
    handler: logging.Handler = JsonLineHandler(stream) if log_format == "json" else RichLineHandler(stream)
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    handler.addFilter(_ThresholdFilter(max(numeric, logging.WARNING) if quiet else numeric))
    # The lockgate loggers pass INFO on, so ALWAYS records reach the handler's filter.
    for name, logger_level in (("lockgate", min(numeric, logging.INFO)), ("uvicorn", min(numeric, logging.DEBUG)
                                                       if numeric <= logging.DEBUG else logging.WARNING),
                               ("psycopg", logging.WARNING)):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(logger_level)
        logger.propagate = False
    # uvicorn's access log only in debug, as before.
    logging.getLogger("uvicorn.access").setLevel(logging.INFO if numeric <= logging.DEBUG else logging.WARNING)
