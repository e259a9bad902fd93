"""Two ``ptt-curate`` runs on one ``out=``, a ``kill -9`` in the middle of the write phase, Ctrl-C: real processes.

- A second run on a folder that a live run owns is refused in one line naming the owner's pid and host, and the
  first run's output stays whole (the first run is frozen with SIGSTOP while it holds the lock, so the order is
  certain, then let go).
- A run killed (SIGKILL) at each step of its write phase leaves a folder whose readers agree: the report's kept
  count, the dataset's rows and ``faces.jsonl``'s kept rows are one set (the old one before the publish, the new
  one after), and a rerun completes. One kill is timed from outside, when the new ``faces.jsonl`` appears.
- Ctrl-C (SIGINT to the process group, as a terminal sends it, or to the process alone) with two workers: one
  "interrupted" line, exit code 130, no traceback, no worker left.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests import _synth as synth
from tests._proc import restore_sigint

psutil = pytest.importorskip("psutil")
pytest.importorskip("curation.detect")
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="flock, kill -9 and process groups")

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_DATASETS_OFFLINE": "1"}
ENV.pop("PTT_CURATE_TEST_KILL_AT", None)


@pytest.fixture(scope="module")
def faces_store(tmp_path_factory) -> Path:
    """Five photos with one clear face each (five kept faces with the default filters)."""
    root = tmp_path_factory.mktemp("faces")
    t1 = synth.t1()
    photos = {
        "astro.png": synth.astronaut(),
        "david.png": t1[200:460, 400:640],
        "jennifer.png": t1[150:520, 0:260],
        "lisa.png": t1[150:520, 1000:1280],
        "hanks.png": synth.insightface_image("Tom_Hanks_54745.png"),
    }
    synth.write_store(root, photos, posts=2)
    return root


def _noise_store(root: Path, n: int) -> Path:
    """``n`` photos of noise (no face: each one a full detection) to keep a run busy."""
    (root / "images" / "full").mkdir(parents=True)
    rng = np.random.default_rng(0)
    images = []
    for i in range(n):
        noise = rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)
        Image.fromarray(noise).save(root / "images" / "full" / f"{i}.jpg")
        images.append({"url": f"http://x/{i}.jpg", "path": f"full/{i}.jpg", "checksum": "", "status": "downloaded"})
    rec = {"article_id": "M.1704067230.A.0A1", "published_at": "2024-01-01T08:00:30+08:00", "images": images}
    (root / "feed.jsonl").write_text(json.dumps(rec) + "\n", encoding="utf-8")
    return root


def _cmd(store: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "curation.cli", "-q", f"feed={store / 'feed.jsonl'}",
            f"images={store / 'images'}", f"out={out}", "workers=1", "split.test_fraction=0.4", *extra]  # fmt: skip


def _curate(store: Path, out: Path, *extra: str, kill_at: str | None = None) -> subprocess.CompletedProcess:
    env = {**ENV, "PTT_CURATE_TEST_KILL_AT": kill_at} if kill_at else ENV
    return subprocess.run(_cmd(store, out, *extra), cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def _one_set(out: Path) -> int:
    """What every reader sees agrees: report, dataset (through curation.store and plain load_from_disk),
    faces.jsonl and faces/; returns the kept count."""
    from datasets import load_from_disk

    from curation.store import open_dataset

    report = json.loads((out / "curation_report.json").read_text(encoding="utf-8"))
    faces = [json.loads(line) for line in (out / "faces.jsonl").read_text(encoding="utf-8").splitlines()]
    kept = sorted(f["face_id"] for f in faces if f["status"] == "kept")
    for dd in (open_dataset(out / "dataset"), load_from_disk(str(out / "dataset"))):
        rows = sorted(fid for split in dd.values() for fid in split["face_id"])
        assert rows == kept, (rows, kept)
        assert {s: len(dd[s]) for s in dd} == {s: report["faces"][s] for s in ("train", "test") if report["faces"][s]}
    assert report["faces"]["kept"] == len(kept) == report["counts"]["kept"]
    assert report["faces"]["detected"] == len(faces)
    assert all((out / "faces" / f"{f['face_id']}.png").is_file() for f in faces)
    assert sorted(p.name for p in (out / "previews").iterdir()) == sorted(
        Path(p).name for p in report["previews"].values()
    )
    return len(kept)


@pytest.fixture(scope="module")
def first(faces_store, tmp_path_factory) -> tuple[Path, int, str]:
    """A finished run: its folder, its kept count, and one kept face id (the review file of the second run)."""
    out = tmp_path_factory.mktemp("first") / "out"
    proc = _curate(faces_store, out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    n = _one_set(out)
    assert n >= 3
    faces = [json.loads(line) for line in (out / "faces.jsonl").read_text(encoding="utf-8").splitlines()]
    return out, n, next(f["face_id"] for f in faces if f["status"] == "kept")


def _snapshot(out: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(out)): (p.lstat().st_size, p.lstat().st_mtime_ns) for p in out.rglob("*")}


def _copy(src: Path, dst: Path) -> Path:
    subprocess.run(["cp", "-a", str(src), str(dst)], check=True)  # keeps the links, as cp -a / rsync -a do
    return dst


@pytest.mark.parametrize("step", ["faces", "previews", "dataset", "report", "published"])
def test_kill_9_at_each_write_step_leaves_one_whole_set(faces_store, first, tmp_path, step):
    out0, n_old, victim = first
    out = _copy(out0, tmp_path / "out")
    (out / "review.json").write_text(json.dumps({"version": 1, "rejected": [victim]}))  # the new set keeps one less
    proc = _curate(faces_store, out, kill_at=step)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert _one_set(out) == (n_old - 1 if step == "published" else n_old)
    proc = _curate(faces_store, out)  # the rerun completes and publishes the new set
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _one_set(out) == n_old - 1
    assert len(list((out / ".generations").iterdir())) <= 2  # the killed run's folder went


def test_kill_9_when_the_new_faces_jsonl_appears(faces_store, first, tmp_path):
    """Timed from outside, as a user's kill is: the moment the new faces.jsonl exists, wherever it is written."""
    out0, n_old, victim = first
    out = _copy(out0, tmp_path / "out")
    (out / "review.json").write_text(json.dumps({"version": 1, "rejected": [victim]}))
    t0 = time.time_ns()
    proc = subprocess.Popen(_cmd(faces_store, out), cwd=ROOT, env=ENV, stderr=subprocess.PIPE)
    killed = False
    while proc.poll() is None and not killed:
        for p in out.rglob("faces.jsonl"):
            try:
                fresh = p.stat().st_mtime_ns >= t0
            except FileNotFoundError:
                continue
            if fresh:
                os.kill(proc.pid, signal.SIGKILL)
                killed = True
                break
    proc.wait(30)
    assert killed and proc.returncode == -signal.SIGKILL, "the run ended before its faces.jsonl was seen"
    assert _one_set(out) == n_old


def test_a_second_run_on_the_same_out_is_refused(faces_store, first, tmp_path):
    out0, n_old, victim = first
    out = _copy(out0, tmp_path / "out")
    a = subprocess.Popen(_cmd(faces_store, out), cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    from common.lock import lock_owner

    deadline = time.monotonic() + 120
    while lock_owner(out).get("pid") != a.pid and a.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert lock_owner(out).get("pid") == a.pid, "the first run never took the folder's lock"
    os.kill(a.pid, signal.SIGSTOP)  # hold it there, lock taken, so the second run certainly meets it
    try:
        before = _snapshot(out)
        (tmp_path / "review.json").write_text(json.dumps({"version": 1, "rejected": [victim]}))
        b = _curate(faces_store, out, f"review_path={tmp_path / 'review.json'}")
        after = _snapshot(out)
    finally:
        os.kill(a.pid, signal.SIGCONT)
    lines = [line for line in b.stderr.splitlines() if line.strip()]
    assert b.returncode == 2 and len(lines) == 1, b.stderr[-2000:]
    assert "error:" in lines[0] and f"pid {a.pid} on {socket.gethostname()}" in lines[0], lines[0]
    assert "Traceback" not in b.stderr
    assert after == before  # the refused run wrote nothing
    a_out, a_err = a.communicate(timeout=300)
    assert a.returncode == 0, a_err[-3000:]
    assert _one_set(out) == n_old  # the first run's own set, whole, not the refused run's
    assert f"{n_old} kept" in a_out.decode()


@pytest.mark.parametrize("target", ["group", "process"])
def test_ctrl_c_is_one_line_and_exit_130(tmp_path, target):
    store = _noise_store(tmp_path / "noise", 300)
    out = tmp_path / "out"
    cmd = [*_cmd(store, out)[:-2], "workers=2"]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=ENV, stderr=subprocess.PIPE, text=True, start_new_session=True, preexec_fn=restore_sigint
    )
    workers: list[int] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        workers = [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
        cache = out / "cache"
        # detecting: results are coming back (a whole entry; a '.<sha1>.json.tmp-*' may be one being written)
        if len(workers) >= 2 and cache.is_dir() and any(cache.glob("*.json")):
            break
        time.sleep(0.05)
    assert proc.poll() is None and len(workers) >= 2, "the run finished before its workers were seen busy"
    if target == "group":
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    else:
        os.kill(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    lines = [line for line in err.splitlines() if line.strip()]
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]
    assert lines == ["ptt-curate: interrupted; rerun to continue (detections so far are cached)"], err[-3000:]
    t0 = time.monotonic()
    while any(psutil.pid_exists(w) and psutil.Process(w).status() != psutil.STATUS_ZOMBIE for w in workers):
        assert time.monotonic() - t0 < 15, "a worker outlived the interrupted run"
        time.sleep(0.1)
    kept = sorted(p.name for p in (out / "cache").iterdir())
    assert any(n.endswith(".json") and not n.startswith(".") for n in kept)  # what was detected is kept for the rerun
    assert not [n for n in kept if ".tmp-" in n], kept  # an entry being written when Ctrl-C came is not left half
    from common.lock import FolderLock

    FolderLock(out).release()  # the lock went with the run


def test_review_page_writes_under_the_lock_and_reads_one_generation(first, tmp_path, capsys):
    """``ptt-curate review`` writes into ``out`` only as its owner (refused in one line while another process, here
    this one's own lock, holds it); given ``<out>/dataset`` (a link into ``.generations/``) it writes the page in
    ``<out>``, read from the current generation."""
    from common.lock import folder_lock
    from curation.review import main_review

    out0, n_old, _ = first
    out = _copy(out0, tmp_path / "out")
    with folder_lock(out):
        capsys.readouterr()
        assert main_review([str(out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "error:" in err[0] and f"pid {os.getpid()} on {socket.gethostname()}" in err[0], err
    assert not (out / "review.html").exists()
    assert main_review([str(out / "dataset")]) == 0
    assert capsys.readouterr().out.strip() == str((out / "review.html").resolve())
    page = (out / "review.html").read_text(encoding="utf-8")
    detected = len((out / "faces.jsonl").read_text(encoding="utf-8").splitlines())
    assert f"Review: out ({detected} faces)" in page
    assert not list((out / ".generations").rglob("review.html"))
