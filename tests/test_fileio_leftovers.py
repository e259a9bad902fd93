"""Crash leftovers are cleaned at the next start, by owner pid: ``clean_stale_temps`` removes
the temporaries of :mod:`common.fileio` whose process is gone and nothing else; ``atomic_replace_dir`` clears its
own target's; ``ptt-curate`` and ``ptt-sample`` call it on their output folders as they start."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from common.fileio import atomic_replace_dir, atomic_write, clean_stale_temps, pid_alive


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert not pid_alive(proc.pid)
    return proc.pid


def _leftovers(folder: Path, dead: int) -> dict[str, bool]:
    """name -> whether it must be removed."""
    me = os.getpid()
    made = {
        f".dataset.tmp-{dead}": True, f".dataset.old-{dead}": True, f".00001.png.tmp-{dead}-k2j_x9ab": True,
        f".dataset.tmp-{me}": False, f".00002.png.tmp-{me}-aaaa1111": False,  # a live process's: never touched
        ".00003.png.ab12cd34.tmp": True,  # the old name without a pid, an hour old
        ".00004.png.zz12cd34.tmp": False,  # the old name, fresh: may belong to a running process
        ".git": False, "notes.tmp-1": False, f"dataset.tmp-{dead}": False,  # not ours
    }  # fmt: skip
    for name in made:
        p = folder / name
        if "dataset" in name or name == ".git":
            (p / "sub").mkdir(parents=True)
            (p / "sub" / "f").write_text("x")
        else:
            p.write_text("half")
    old = time.time() - 7200
    os.utime(folder / ".00003.png.ab12cd34.tmp", (old, old))
    return made


def test_clean_stale_temps_removes_only_dead_owners_leftovers(tmp_path):
    made = _leftovers(tmp_path, _dead_pid())
    removed = {p.name for p in clean_stale_temps(tmp_path)}
    assert removed == {n for n, gone in made.items() if gone}
    assert {p.name for p in tmp_path.iterdir()} == {n for n, gone in made.items() if not gone}


def test_atomic_write_temp_names_carry_the_pid(tmp_path, monkeypatch):
    seen = []
    real = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (seen.append(Path(a).name), real(a, b)))
    atomic_write(tmp_path / "a.json", "{}")
    assert seen and seen[0].startswith(f".a.json.tmp-{os.getpid()}-")


def test_atomic_replace_dir_clears_its_targets_dead_leftovers(tmp_path):
    dead = _dead_pid()
    for kind in ("tmp", "old"):
        (tmp_path / f".pipeline.{kind}-{dead}" / "unet").mkdir(parents=True)
    (tmp_path / f".other.tmp-{dead}").mkdir()
    with atomic_replace_dir(tmp_path / "pipeline") as tmp:
        (tmp / "model_index.json").write_text("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".other.tmp-{dead}", "pipeline"]


def test_ptt_curate_cleans_its_out_folder_at_start(tmp_path, capsys):
    pytest.importorskip("curation.detect")
    import numpy as np
    from PIL import Image

    from curation import cli

    (tmp_path / "images" / "full").mkdir(parents=True)
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(tmp_path / "images" / "full" / "1.jpg")
    img = {"url": "http://x/1.jpg", "path": "full/1.jpg", "checksum": "", "status": "downloaded"}
    rec = {"article_id": "M.1704067230.A.0A1", "published_at": "2024-01-01T08:00:30+08:00", "images": [img]}
    (tmp_path / "feed.jsonl").write_text(json.dumps(rec) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    (out / "faces").mkdir(parents=True)
    dead = _dead_pid()
    (out / f".dataset.tmp-{dead}").mkdir()
    (out / "faces" / f".a-0.png.tmp-{dead}-abcdefgh").write_bytes(b"half")
    (out / f".dataset.tmp-{os.getpid()}").mkdir()
    rc = cli.main([f"feed={tmp_path / 'feed.jsonl'}", f"images={tmp_path / 'images'}", f"out={out}", "workers=1"])
    assert rc == 2 and "no face kept" in capsys.readouterr().err  # a grey square: the run itself goes nowhere
    assert (
        not (out / f".dataset.tmp-{dead}").exists() and not (out / "faces" / f".a-0.png.tmp-{dead}-abcdefgh").exists()
    )
    assert (out / f".dataset.tmp-{os.getpid()}").is_dir()
