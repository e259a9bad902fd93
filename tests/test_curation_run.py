"""End to end: ``ptt-curate`` on a feed + image store of real photos and bad inputs (contracts 1-3)."""

from __future__ import annotations

import io
import json
import shutil
import struct
import sys
import types
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from curation import cli
from curation.record import DATASET_COLUMNS as FEATURE_COLUMNS
from tests import _synth as synth

CONFIG = str(Path(__file__).resolve().parents[1] / "configs" / "curation.yaml")


def _bomb() -> bytes:
    buf = io.BytesIO()
    Image.new("L", (8, 8)).save(buf, format="PNG")
    raw = buf.getvalue()
    chunk = b"IHDR" + struct.pack(">II", 12_000, 10_000) + raw[24:29]
    return raw[:8] + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk)) + raw[33:]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    a, t1 = synth.astronaut(), synth.t1()
    from curation.detect import RetinaFaceDetector

    lm = RetinaFaceDetector().detect(a)[0].landmarks
    hanks = synth.insightface_image("Tom_Hanks_54745.png")
    exif = Image.Exif()
    exif[0x0112] = 8  # "rotate 90 CCW to display": the stored pixels are rotated clockwise
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(np.rot90(t1[150:520, 1000:1280], k=-1))).save(
        buf, format="JPEG", quality=95, exif=exif.tobytes()
    )
    astro_png = synth.encode(a)
    far = np.full((1400, 1400, 3), 200, np.uint8)
    far[400:912, 400:912] = a
    cmyk = io.BytesIO()
    Image.fromarray(t1[150:520, 0:260]).convert("CMYK").save(cmyk, format="JPEG", quality=95)
    photos = {
        "astro.png": astro_png,
        "jennifer_cmyk.jpg": cmyk.getvalue(),
        "david.png": t1[200:460, 400:640],
        "lisa_exif.jpg": buf.getvalue(),
        "hanks_grey.png": synth.encode(np.asarray(Image.fromarray(hanks).convert("L"))),
        "astro_again.png": astro_png,  # the same bytes reposted
        "astro_copy.jpg": synth.shrink(a, 0.9),  # re-encoded, resized: near-duplicate
        "astro_mirror.png": np.ascontiguousarray(a[:, ::-1]),  # mirrored repost: near-duplicate too
        "astro_blur.png": synth.blur(a, 6.0),
        "astro_dark.png": synth.darken_eyes(a, lm),
        "astro_far.png": far,  # the face is 0.3% of the photo
        "blank.png": np.full((200, 300, 3), 180, np.uint8),
        "empty.jpg": b"",
        "truncated.jpg": synth.encode(a, "JPEG")[:3000],
        "bomb.png": _bomb(),
    }
    feed = synth.write_store(root, photos, posts=4)
    # a feed record pointing at a file that is not in the store
    with feed.open("a", encoding="utf-8") as fh:
        fh.write(
            json.dumps(
                {
                    "article_id": "M.1.A.1",
                    "published_at": "2023-12-01T00:00:00+08:00",
                    "images": [{"url": "http://x/y.jpg", "path": "full/missing.jpg"}],
                }
            )
            + "\n"
        )
    return root


def _run(store: Path, out: Path, *extra: str) -> int:
    return cli.main(
        [
            "--config",
            CONFIG,
            f"feed={store / 'feed.jsonl'}",
            f"images={store / 'images'}",
            f"out={out}",
            "workers=1",
            "split.test_fraction=0.4",
            *extra,
        ]
    )


@pytest.fixture(scope="module")
def first_run(store, tmp_path_factory):
    out = tmp_path_factory.mktemp("curated")
    assert _run(store, out) == 0
    return out


def _report(out: Path) -> dict:
    return json.loads((out / "curation_report.json").read_text(encoding="utf-8"))


def _faces(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "faces.jsonl").read_text(encoding="utf-8").splitlines()]


def test_dataset_follows_the_contract(first_run):
    from datasets import load_from_disk

    dd = load_from_disk(str(first_run / "dataset"))
    assert set(dd) == {"train", "test"}
    assert len(dd["train"]) >= 1 and len(dd["test"]) >= 1
    for split in dd.values():
        assert list(split.features) == list(FEATURE_COLUMNS)
        assert split.features["image"].__class__.__name__ == "Image"
        for col in ("face_score", "blur_var", "eye_distance", "eye_brightness", "yaw"):
            assert split.features[col].dtype == "float32"
        for row in split:
            assert row["image"].size == (64, 64) and row["image"].mode == "RGB"
            assert len(row["face_id"].split("-")[0]) == 16 and row["face_id"].endswith("-0")
            assert row["pose"] in ("frontal", "left", "right")
            assert row["gender"] in ("female", "male", "unknown")
            assert len(row["phash"]) == 16 and row["published_at"].endswith("+08:00")
            assert row["image_url"].startswith("http://127.0.0.1/img/")
    from common.lock import LOCK_NAME
    from curation.generations import CURRENT_LINK, GENERATIONS_DIR

    hidden = {p.name for p in first_run.iterdir() if p.name.startswith(".")}
    assert hidden == {LOCK_NAME, CURRENT_LINK, GENERATIONS_DIR}  # no temp folders left behind
    assert not list((first_run / GENERATIONS_DIR).rglob(".*"))


def test_report_counts_every_reject_by_reason(first_run):
    rep = _report(first_run)
    r = rep["rejected"]
    assert rep["photos"]["in"] == 16
    assert r["duplicate_photo"] == 1 and r["missing_file"] == 1
    assert r["unreadable"] == 2 and r["too_large"] == 1 and r["no_face"] == 1
    assert r["blur"] == 1 and r["eye_brightness"] == 1 and r["small_face"] == 1 and r["near_duplicate"] == 2
    kept = {f["photo"] for f in _faces(first_run) if f["status"] == "kept"}
    assert kept == {
        f"full/{n}" for n in ("astro.png", "jennifer_cmyk.jpg", "david.png", "lisa_exif.jpg", "hanks_grey.png")
    }
    f = rep["faces"]
    assert f["kept"] == 5 == f["train"] + f["test"] == rep["counts"]["kept"]
    assert rep["counts"]["rejected"]["near_duplicate"] == 2 and "review" not in rep["counts"]["rejected"]
    assert f["detected"] == f["kept"] + sum(r[k] for k in ("blur", "eye_brightness", "small_face", "near_duplicate"))
    assert rep["thresholds"]["min_blur_var"] == 50.0 and rep["thresholds"]["min_face_area_ratio"] == 0.015
    assert rep["photos"]["detected_now"] == 11 and rep["photos"]["from_cache"] == 0


def test_faces_folder_and_previews_for_review(first_run):
    faces = _faces(first_run)
    assert len(faces) == _report(first_run)["faces"]["detected"]
    for f in faces:
        assert f["status"] in ("kept", "rejected") and (f["reason"] is None) == (f["status"] == "kept")
        assert (f["split"] in ("train", "test")) == (f["status"] == "kept")
        im = Image.open(first_run / "faces" / f"{f['face_id']}.png")
        assert im.size == (64, 64) and im.mode == "RGB"
    prev = first_run / "previews"
    for name in (
        "kept",
        "rejected_blur",
        "rejected_eye_brightness",
        "rejected_near_duplicate",
        "rejected_small_face",
        "rejected_no_face",
        "histograms",
    ):
        assert Image.open(prev / f"{name}.png").size[0] > 60, name
    # the exif-rotated photo was turned upright before detection: its face is frontal and level
    lisa = next(f for f in faces if f["photo"] == "full/lisa_exif.jpg")
    lm = np.array(lisa["landmarks"])
    assert abs(lm[0, 1] - lm[1, 1]) < 0.2 * abs(lm[1, 0] - lm[0, 0])


def test_rerun_uses_cache_and_new_threshold_needs_no_detection(store, first_run, tmp_path, monkeypatch):
    out = tmp_path / "out"
    shutil.copytree(first_run, out)
    from curation import detect

    def boom(self, rgb):
        raise AssertionError("detection ran although every photo is cached")

    monkeypatch.setattr(detect.RetinaFaceDetector, "detect", boom)
    before = {f["face_id"]: f for f in _faces(first_run)}
    kept_blur = sorted(f["blur_var"] for f in before.values() if f["status"] == "kept")
    assert _run(store, out, f"filters.min_blur_var={kept_blur[1] - 1e-3}") == 0
    rep = _report(out)
    assert rep["photos"]["detected_now"] == 0 and rep["photos"]["from_cache"] == 11
    assert rep["rejected"]["blur"] == 2 and rep["faces"]["kept"] == 4
    assert rep["thresholds"]["min_blur_var"] == pytest.approx(kept_blur[1] - 1e-3)


def test_review_decisions_remove_exactly_those_faces(store, first_run, tmp_path, monkeypatch):
    out = tmp_path / "out"
    shutil.copytree(first_run, out)
    kept_before = {f["face_id"] for f in _faces(first_run) if f["status"] == "kept"}
    gone = sorted(kept_before)[:2]
    (out / "review.json").write_text(json.dumps({"version": 1, "rejected": gone}), encoding="utf-8")
    assert _run(store, out) == 0
    after = {f["face_id"]: f for f in _faces(out)}
    assert {k for k, f in after.items() if f["status"] == "kept"} == kept_before - set(gone)
    assert all(after[g]["reason"] == "review" for g in gone)
    rep = _report(out)
    assert rep["rejected"]["review"] == 2 and rep["review"]["applied"] == 2
    assert rep["photos"]["detected_now"] == 0
    from datasets import load_from_disk

    dd = load_from_disk(str(out / "dataset"))
    ids = set(dd["train"]["face_id"]) | set(dd["test"]["face_id"])
    assert ids == kept_before - set(gone)
    # bad review file: one-line error naming it
    (out / "review.json").write_text("{not json", encoding="utf-8")
    assert _run(store, out) == 2


def test_review_ids_that_match_no_face_are_counted_and_a_folder_is_refused(store, first_run, tmp_path, caplog, capsys):
    out = tmp_path / "out"
    shutil.copytree(first_run, out)
    kept = sorted(f["face_id"] for f in _faces(first_run) if f["status"] == "kept")
    review = {"version": 1, "rejected": [kept[0], "0000000000000000-0", "ffffffffffffffff-3"]}
    (out / "review.json").write_text(json.dumps(review), encoding="utf-8")
    with caplog.at_level("WARNING", logger="curation"):
        assert _run(store, out) == 0
    warned = [r.getMessage() for r in caplog.records if "match no detected face" in r.getMessage()]
    assert len(warned) == 1 and "2 of 3" in warned[0] and "review.json" in warned[0], warned
    assert _report(out)["review"]["applied"] == 1
    (out / "review.json").unlink()
    (out / "review.json").mkdir()  # e.g. a browser's download unpacked into a folder of that name
    capsys.readouterr()
    assert _run(store, out) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "review.json: a folder, not a review file" in err[0], err


def test_no_test_faces_gives_a_loadable_train_only_dataset(store, first_run, tmp_path, caplog):
    """split.test_fraction=0: the dataset has a train split only (datasets cannot load an empty split), which
    load_from_disk, the trainer's reader, ptt-fid's reader and push all open; asking for test is one line."""
    from datasets import load_from_disk

    from curation.push import stage_upload
    from curation.store import DatasetFolderError, read_split

    out = tmp_path / "out"
    shutil.copytree(first_run, out)
    with caplog.at_level("WARNING", logger="curation"):
        assert _run(store, out, "split.test_fraction=0.0") == 0
    assert any("no face in the test split" in r.getMessage() for r in caplog.records)
    dd = load_from_disk(str(out / "dataset"))
    assert set(dd) == {"train"} and len(dd["train"]) == _report(out)["faces"]["kept"] == 5
    ds, split = read_split(out / "dataset", "train")
    assert split == "train" and len(ds) == 5
    with pytest.raises(DatasetFolderError, match="no split 'test'; it has train"):
        read_split(out / "dataset", None, default="test")
    stage = stage_upload(out, tmp_path / "stage", repo_id="someone/x")
    assert sorted(p.name for p in (stage / "data").iterdir()) == ["train-00000-of-00001.parquet"]


def test_one_face_in_the_test_split_is_refused_in_one_line(store, first_run, tmp_path, capsys):
    """One kept face that falls in the test split would leave train empty: no dataset is written (the report says
    so, and <out>/dataset is gone with the old set, not left over from it), one line says what to change."""
    out = tmp_path / "out"
    shutil.copytree(first_run, out)
    kept = sorted(f["face_id"] for f in _faces(first_run) if f["status"] == "kept")
    (out / "review.json").write_text(json.dumps({"version": 1, "rejected": kept[1:]}), encoding="utf-8")
    capsys.readouterr()
    assert _run(store, out, "split.test_fraction=0.999") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "1 face(s) kept, all in the test split" in err[0], err
    assert "split.test_fraction" in err[0]
    rep = _report(out)
    assert rep["faces"]["kept"] == 1 and rep["dataset"] is None
    assert not (out / "dataset").exists()
    from curation.store import DatasetFolderError, read_split

    with pytest.raises(DatasetFolderError, match="run `ptt-curate` first"):
        read_split(out / "dataset", "train")


def test_split_is_stable_per_face(store, first_run, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(first_run, out)
    assert _run(store, out) == 0
    a = {f["face_id"]: f["split"] for f in _faces(first_run)}
    b = {f["face_id"]: f["split"] for f in _faces(out)}
    assert a == b


@pytest.mark.slow
def test_two_workers_give_the_same_result(store, first_run, tmp_path):
    out = tmp_path / "out"
    assert _run(store, out, "workers=2") == 0
    strip = lambda fs: {f["face_id"]: (f["status"], f["reason"], round(f["blur_var"], 3)) for f in fs}  # noqa: E731
    assert strip(_faces(out)) == strip(_faces(first_run))
    assert _report(out)["photos"]["detected_now"] == 11


def test_missing_inputs_are_one_line_errors(tmp_path, capsys):
    (tmp_path / "images").mkdir()
    rc = cli.main([f"feed={tmp_path / 'nope.jsonl'}", f"images={tmp_path / 'images'}", f"out={tmp_path / 'o'}"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "nope.jsonl" in err and "crawl" in err and len(err.splitlines()) == 1
    feed = tmp_path / "feed.jsonl"
    feed.write_text(json.dumps({"article_id": "M.1.A.1", "images": []}) + "\n", encoding="utf-8")
    rc = cli.main([f"feed={feed}", f"images={tmp_path / 'missing_images'}", f"out={tmp_path / 'o'}"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "missing_images" in err and "IMAGES_STORE" in err and len(err.splitlines()) == 1
    rc = cli.main([f"feed={feed}", f"images={tmp_path / 'images'}", f"out={tmp_path / 'o'}"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "no downloaded images" in err and len(err.splitlines()) == 1
    rc = cli.main([f"images={tmp_path / 'images'}", f"out={tmp_path / 'o'}"])
    assert rc == 2 and "feed is not set" in capsys.readouterr().err


def test_config_errors_and_dry_run(tmp_path, capsys):
    assert cli.main(["--config", CONFIG, "filters.min_blurr=3"]) == 2
    err = capsys.readouterr().err
    assert "filters.min_blurr" in err
    assert cli.main(["--config", CONFIG, "--dry-run", "filters.min_blur_var=60.0"]) == 0
    out = capsys.readouterr().out
    assert "min_blur_var: 60.0" in out and "backend: retinaface" in out and "workers: 2" in out


def test_review_subcommand_dispatches_lazily(monkeypatch, tmp_path):
    seen = []
    fake = types.ModuleType("curation.review")
    fake.main_review = lambda argv: seen.append(argv) or 0
    monkeypatch.setitem(sys.modules, "curation.review", fake)
    assert cli.main(["review", str(tmp_path)]) == 0
    assert seen == [[str(tmp_path)]]


def test_push_offline_is_a_clear_error_and_stages_parquet(first_run, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    rc = cli.main(["push", "--repo", "someone/ptt-faces-64", str(first_run)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "HF_HUB_OFFLINE" in err and len(err.splitlines()) == 1
    from datasets import load_dataset

    from curation.push import stage_upload

    stage = stage_upload(first_run, tmp_path / "stage", repo_id="someone/ptt-faces-64")
    card = (stage / "README.md").read_text(encoding="utf-8")
    rep = _report(first_run)
    assert f"kept: {rep['faces']['kept']}" in card and "min_blur_var" in card and "| blur | 1 |" in card
    assert "people" in card.lower() and "ptt.cc" in card
    ds = load_dataset("parquet", data_files={"train": str(stage / "data" / "train-00000-of-00001.parquet")})
    assert list(ds["train"].features) == list(FEATURE_COLUMNS) and len(ds["train"]) == rep["faces"]["train"]
    assert cli.main(["push", "--repo", "x/y", str(tmp_path / "nothing")]) == 2


def test_a_dying_worker_is_a_one_line_error_and_the_rerun_resumes(tmp_path, capsys, monkeypatch):
    import os

    from curation import photos as photo_work

    a = synth.astronaut()
    photos = {f"p{i}.png": synth.rotate(a, 5.0 * i) for i in range(4)}
    feed = synth.write_store(tmp_path / "s", photos)
    real = photo_work.process_photo

    def dies_on_p3(path, *args, **kw):
        if path.endswith("p3.png"):
            os._exit(1)  # like the kernel's OOM killer: no exception, the process is gone
        return real(path, *args, **kw)

    monkeypatch.setattr(photo_work, "process_photo", dies_on_p3)  # inherited by the forked workers
    argv = [f"feed={feed}", f"images={tmp_path / 's' / 'images'}", f"out={tmp_path / 'o'}", "workers=2"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "worker died" in err and "resume" in err and len(err.splitlines()) == 1
    monkeypatch.setattr(photo_work, "process_photo", real)
    assert cli.main(argv) == 0
    rep = _report(tmp_path / "o")
    assert rep["photos"]["from_cache"] + rep["photos"]["detected_now"] == 4


def test_corrupt_cache_entry_is_detected_again(store, first_run, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(first_run, out)
    victim = sorted((out / "cache").glob("*.json"))[0]
    victim.write_text("{truncated", encoding="utf-8")
    assert _run(store, out) == 0
    rep = _report(out)
    assert rep["photos"]["detected_now"] == 1 and rep["photos"]["from_cache"] == 10
    assert json.loads(victim.read_text(encoding="utf-8"))["version"] == 1  # rewritten
    assert rep["faces"]["kept"] == _report(first_run)["faces"]["kept"]


def test_assign_splits_is_stable_and_has_a_floor():
    from curation.config import SplitConfig
    from curation.faces import assign_splits

    ids = [f"{i:016x}-0" for i in range(1000)]
    cfg = SplitConfig(test_fraction=0.1, seed=0)
    a = assign_splits(ids, cfg)
    assert 60 <= a.count("test") <= 140
    b = assign_splits(ids + [f"new{i}-0" for i in range(200)], cfg)
    assert b[:1000] == a  # adding photos never moves a face
    assert assign_splits(ids, SplitConfig(test_fraction=0.1, seed=1)) != a  # the seed matters
    small = assign_splits(ids[:5], cfg)
    assert small.count("test") >= 2 and small.count("train") >= 1
    assert assign_splits(ids[:3], SplitConfig(test_fraction=0.01)).count("test") == 0  # floor needs 2x faces
    assert assign_splits(ids[:50], SplitConfig(test_fraction=0.0)).count("test") == 0


def test_console_script_entry_point(tmp_path):
    import subprocess

    exe = Path(sys.executable).with_name("ptt-curate")
    if not exe.exists():
        pytest.skip(f"{exe} not installed (pip install -e .)")
    r = subprocess.run(
        [str(exe), "--config", CONFIG, "--dry-run", "out=x"], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0 and "out: x" in r.stdout and "phash_max_distance: 8" in r.stdout
    r = subprocess.run([str(exe), f"feed={tmp_path / 'none.jsonl'}", f"images={tmp_path}", f"out={tmp_path / 'o'}"],
                       capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 2 and r.stderr.startswith("ptt-curate: error:") and "none.jsonl" in r.stderr
