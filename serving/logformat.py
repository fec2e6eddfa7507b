"""The JSON log line shared by gunicorn's master and the app: one object per line with the fields
of API.md. The app (app/logutils.py) adds its request and execution ids with its own filter."""
from __future__ import annotations

import logging

from pythonjsonlogger.json import JsonFormatter

SERVICE = "ipaas-api"


class ServiceFilter(logging.Filter):
    """Name the service on every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.service = SERVICE
        return True


class Formatter(JsonFormatter):
    def __init__(self) -> None:
        super().__init__(
            "%(timestamp)s %(levelname)s %(message)s %(service)s",
            rename_fields={"levelname": "level"},
            timestamp=True,
        )

    def add_fields(self, log_record: dict, record: logging.LogRecord, message_dict: dict) -> None:
        super().add_fields(log_record, record, message_dict)
        log_record["level"] = str(log_record.get("level", record.levelname)).lower()
        log_record.setdefault("service", SERVICE)
        log_record.setdefault("logger", record.name)
