"""``kill -9`` of ``ptt-curate`` during detection leaves no worker behind: a real ptt-curate
process with 2 workers over a few hundred photos is killed with SIGKILL once its workers are busy; the workers must
be gone within seconds and the pipe that held its stdout and stderr (``ptt-curate ... | tee log``) must reach EOF."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

psutil = pytest.importorskip("psutil")
pytest.importorskip("curation.detect")


def _store(tmp_path: Path, n: int) -> tuple[Path, Path]:
    store = tmp_path / "images"
    (store / "full").mkdir(parents=True)
    rng = np.random.default_rng(0)
    images = []
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (600, 800, 3), dtype=np.uint8)).save(store / "full" / f"{i}.jpg")
        images.append({"url": f"http://x/{i}.jpg", "path": f"full/{i}.jpg", "checksum": "", "status": "downloaded"})
    feed = tmp_path / "feed.jsonl"
    rec = {"article_id": "M.1704067230.A.0A1", "published_at": "2024-01-01T08:00:30+08:00", "images": images}
    feed.write_text(json.dumps(rec) + "\n", encoding="utf-8")
    return feed, store


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="kill -9 and /proc semantics of Linux")
def test_kill_9_during_detection_leaves_no_worker(tmp_path):
    feed, store = _store(tmp_path, 400)
    exe = shutil.which("ptt-curate", path=str(Path(sys.executable).parent)) or "ptt-curate"
    cmd = [exe, f"feed={feed}", f"images={store}", f"out={tmp_path / 'out'}", "workers=2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output: list[bytes] = []
    reader = threading.Thread(target=lambda: output.append(proc.stdout.read()), daemon=True)
    reader.start()
    workers: list[int] = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and proc.poll() is None:
        workers = [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
        cache = tmp_path / "out" / "cache"
        if len(workers) >= 2 and cache.is_dir() and any(cache.iterdir()):  # detecting: results are coming back
            break
        time.sleep(0.1)
    assert proc.poll() is None and len(workers) >= 2, "ptt-curate finished before its workers were seen busy"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    t0 = time.monotonic()
    while any(_alive(w) for w in workers) and time.monotonic() - t0 < 15:
        time.sleep(0.1)
    left = [w for w in workers if _alive(w)]
    for w in left:  # do not leave them to the next test
        os.kill(w, signal.SIGKILL)
    assert left == [], f"workers {left} outlived their killed parent"
    reader.join(15)
    assert not reader.is_alive(), "the stdout pipe never reached EOF (an orphan still holds it)"
    print(f"workers gone {time.monotonic() - t0:.2f} s after kill -9")
