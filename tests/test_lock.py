"""common.lock: one owner per folder, refused with the owner's pid and host, nothing stale after kill -9."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from common.lock import LOCK_NAME, FolderBusyError, FolderLock, folder_lock, lock_owner

ROOT = Path(__file__).resolve().parents[1]

HOLDER = """
import sys, time
from common.lock import FolderLock
lock = FolderLock(sys.argv[1])
print("locked", flush=True)
time.sleep(60)
"""


def _start_holder(folder: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(folder)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_second_lock_in_another_process_is_refused_naming_the_owner(tmp_path):
    holder = _start_holder(tmp_path / "run")
    try:
        with pytest.raises(FolderBusyError) as err:
            FolderLock(tmp_path / "run")
        line = str(err.value)
        assert "\n" not in line
        assert f"pid {holder.pid}" in line and socket.gethostname() in line
        assert str(tmp_path / "run") in line
        assert lock_owner(tmp_path / "run")["pid"] == holder.pid
    finally:
        holder.kill()
        holder.wait()


def test_kill_9_leaves_nothing_stale(tmp_path):
    holder = _start_holder(tmp_path / "run")
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert (tmp_path / "run" / LOCK_NAME).exists()  # the file stays; the kernel dropped the lock with the process
    with folder_lock(tmp_path / "run") as lock:
        assert lock.held and lock_owner(tmp_path / "run")["pid"] == os.getpid()


def test_release_lets_the_next_owner_in_and_same_process_twice_is_refused(tmp_path):
    first = FolderLock(tmp_path)
    with pytest.raises(FolderBusyError):
        FolderLock(tmp_path)  # flock is per open file: the same process is refused too
    first.release()
    assert not first.held
    second = FolderLock(tmp_path)
    assert second.held
    second.release()
