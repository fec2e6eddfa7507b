"""The operator's secret keys: IPAAS_SECRET_KEY, or one generated on first start into the instance folder.

`IPAAS_SECRET_KEY` holds one or more comma-separated Fernet keys (urlsafe base64 of 32 bytes, as
`cryptography.fernet.Fernet.generate_key()` makes them). The first key encrypts new secrets and signs
dashboard sessions; all of them decrypt, so keys can be rotated (see `flask --app wsgi secrets rotate`).
Without the variable, a key is generated once into `<instance>/secret.key` with mode 0600, as n8n does
with its encryption key file, and the log says so once."""
from __future__ import annotations

import logging
import os
from pathlib import Path

from cryptography.fernet import Fernet

log = logging.getLogger(__name__)
KEY_FILE = "secret.key"


def _parse(text: str, source: str) -> list[bytes]:
    keys = [part.strip().encode("ascii") for part in text.split(",") if part.strip()]
    if not keys:
        raise ValueError(f"{source} holds no key")
    for index, key in enumerate(keys):
        try:
            Fernet(key)
        except ValueError:
            # Never echo the key itself: only where it came from and which one it is.
            raise ValueError(f"{source}: key {index + 1} is not a Fernet key (32 url-safe base64-encoded bytes)"
                             ) from None
    return keys


def load_secret_keys(configured: str | None, instance_path: str) -> list[bytes]:
    """Return the keys, first one current; generate and store one if none is configured or stored.

    Raises ValueError naming IPAAS_SECRET_KEY (or the key file) when a key is malformed."""
    if configured and configured.strip():
        return _parse(configured, "IPAAS_SECRET_KEY")
    path = Path(instance_path) / KEY_FILE
    if path.exists():
        return _parse(path.read_text(encoding="ascii"), str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    key = Fernet.generate_key()
    try:
        # O_EXCL: when several gunicorn processes start at once, one writes the key and the others read it.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _parse(_read_when_written(path), str(path))
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(key.decode("ascii") + "\n")
    log.warning("IPAAS_SECRET_KEY is not set: generated a secret key", extra={"data": {"path": str(path)}})
    return [key]


def _read_when_written(path: Path) -> str:
    import time

    deadline = time.monotonic() + 5.0
    while not (text := path.read_text(encoding="ascii")).strip() and time.monotonic() < deadline:
        time.sleep(0.01)
    return text
