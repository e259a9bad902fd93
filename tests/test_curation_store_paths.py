"""A feed cannot pull files from outside the image store into the dataset: an absolute
``images[].path``, one that climbs out with ``../`` and a symlink leading out are refused as ``outside_store`` and
counted in ``curation_report.json``; the file is never read."""

from __future__ import annotations

import json
import os
from pathlib import Path

from PIL import Image

from curation import cli
from curation.inputs import read_feed, store_relative
from curation.photos import hash_photos


def _feed(tmp_path: Path, paths: list[str]) -> Path:
    feed = tmp_path / "feed.jsonl"
    images = [
        {"url": f"http://x/{i}.jpg", "path": p, "checksum": "", "status": "downloaded"} for i, p in enumerate(paths)
    ]
    rec = {"article_id": "M.1704067230.A.0A1", "published_at": "2024-01-01T08:00:30+08:00", "images": images}
    feed.write_text(json.dumps(rec) + "\n", encoding="utf-8")
    return feed


def _setup(tmp_path: Path) -> tuple[Path, Path, list[str]]:
    store = tmp_path / "images"
    (store / "full").mkdir(parents=True)
    secret = tmp_path / "secret.png"  # e.g. a token or a private photo beside the store
    Image.new("RGB", (8, 8), (1, 2, 3)).save(secret)
    os.symlink(secret, store / "full" / "link.png")
    bad = [str(secret), "../secret.png", "full/../../secret.png", "full/link.png"]
    return store, secret, bad


def test_paths_outside_the_store_are_refused_before_reading(tmp_path):
    store, _secret, bad = _setup(tmp_path)
    Image.new("RGB", (8, 8), (9, 9, 9)).save(store / "full" / "ok.png")
    refs, _ = read_feed(_feed(tmp_path, [*bad, "full/ok.png", "full/./ok.png"]))
    photos = hash_photos(refs, 1, store, tmp_path / "cache", "sig")
    assert photos.rejects["outside_store"] == 4
    assert [t[0] for t in photos.tasks] == [str(store / "full/ok.png")]
    assert {e["path"] for e in photos.log if e["reason"] == "outside_store"} == set(bad)
    assert store_relative("full/a.jpg", store.resolve()) and not store_relative("", store.resolve())


def test_report_counts_outside_store(tmp_path, capsys):
    store, _secret, bad = _setup(tmp_path)
    out = tmp_path / "out"
    rc = cli.main([f"feed={_feed(tmp_path, bad)}", f"images={store}", f"out={out}", "workers=1"])
    assert rc == 2 and "no face kept" in capsys.readouterr().err
    report = json.loads((out / "curation_report.json").read_text(encoding="utf-8"))
    assert report["rejected"]["outside_store"] == 4 and report["counts"]["rejected"] == {"outside_store": 4}
    assert not (out / "dataset").exists()
