"""Tokens never reach a log line: a filter masks anything shaped like one.

Osprey itself never logs a credential; this is the second line, for what other code
logs (a client that puts a token in a URL, which the access log would print).
"""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime

#: An osprey token, or the credential of any Bearer header.
_SECRET = re.compile(r"(osp_[0-9a-f]{12}_)[A-Za-z0-9_-]+|(?i:(bearer\s+))\S+")
#: Loggers whose records are scrubbed (uvicorn's, and this package's).
SCRUBBED_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "osprey_core.service")


def mask_secrets(text: str) -> str:
    return _SECRET.sub(lambda match: f"{match.group(1) or match.group(2)}***", text)


class SecretFilter(logging.Filter):
    """Rewrites a record's message with every token masked (never drops the record)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_secrets(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


_FILTER = SecretFilter()


def scrub_logs() -> None:
    """Put the filter on the service's loggers (once)."""
    for name in SCRUBBED_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message (and the exception)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"at": datetime.fromtimestamp(record.created, UTC).isoformat(),
                 "level": record.levelname, "logger": record.name,
                 "message": mask_secrets(record.getMessage())}
        if record.exc_info:
            entry["exception"] = mask_secrets(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False)
