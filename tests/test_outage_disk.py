"""A real full disk under the real service: the SQLite file on a small private tmpfs, filled for longer
than the runner's old patience (7.5 s) while senders post webhooks, then freed (tests/outage_load.py).

Mounting needs root (CI runs as root); elsewhere the test is skipped, saying why. The tmpfs is
unmounted at teardown even when the test fails. Run with -s to see the figures (bench/RESULTS.md)."""
from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from tests.outage_load import run_outage
from tests.receiver import Receiver, receiver  # noqa: F401 (a fixture)
from tests.services import require

pytestmark = pytest.mark.slow

DISK_BYTES = 16 * 1024 * 1024
FULL_FOR = 9.0  # seconds: longer than the old patience, which left executions running for good


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A private tmpfs of DISK_BYTES under tmp_path, unmounted at teardown."""
    if os.geteuid() != 0:
        require("a private tmpfs", "mounting one needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_BYTES},mode=0700", "tmpfs", str(mount)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        require("a private tmpfs", f"mount failed: {mounted.stderr.strip()}")
    try:
        yield mount
    finally:
        # Lazy: the servers are stopped by then, but a straggling file handle must not leave it mounted.
        subprocess.run(["umount", "--lazy", str(mount)], check=False)


def fill(path: Path) -> int:
    """Write zeros to `path` until the file system is full; return how many bytes went in."""
    written, chunk = 0, b"\0" * 65536
    with open(path, "wb", buffering=0) as filler:
        while True:
            try:
                written += filler.write(chunk)
            except OSError as error:
                if error.errno != errno.ENOSPC:
                    raise
                return written


def test_full_disk_for_longer_than_the_old_patience_loses_nothing_and_recovers_by_itself(
        small_disk: Path, tmp_path: Path, receiver: Receiver):
    filler = small_disk / "filler"
    figures = run_outage(tmp_path, receiver, {"IPAAS_DATABASE_URL": f"sqlite:///{small_disk}/ipaas.sqlite3"},
                         down_for=FULL_FOR, break_store=lambda: fill(filler), mend_store=filler.unlink)
    print(f"\ndisk full {FULL_FOR:g} s: {figures}")
