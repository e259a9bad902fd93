"""Every command-line tool on bad inputs ends in one line, not a traceback.

Each row runs a real command in a subprocess and asserts: a non-zero exit, exactly one non-empty line on stderr,
that line names the bad input, no ``Traceback``, and (where something was there before) nothing already written
changed. Read-only folders and full disks are real: a tmpfs mounted read-only, or a tmpfs of a few KB, in a
private mount namespace (``unshare -rm``; rows that need it skip where user namespaces are off). Root ignores
file permissions, so a chmod would not make a folder read-only for these tests.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from common.lock import LOCK_NAME

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
TINY_TRAIN = """\
data: {resolution: 16}
model: {block_out_channels: [8, 16], down_block_types: [DownBlock2D, DownBlock2D],
        up_block_types: [UpBlock2D, UpBlock2D], layers_per_block: 1, norm_num_groups: 4, add_attention: false}
train: {batch_size: 4, max_steps: 4, log_every_steps: 1, checkpoint_every_steps: 2, sample_every_steps: 100,
        sample_num_images: 4, sample_steps: 2, log_with: none}
"""


LOG_RE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (INFO|WARNING) ")
BAR_RE = re.compile(r"^\s*\w+:\s+\d+%\|")


def _unshare_ok() -> bool:
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs tmpfs /mnt"], capture_output=True)
    return probe.returncode == 0


UNSHARE = _unshare_ok()


def _tmpfs(mount: Path, opts: str, cmd: list[str]) -> list[str]:
    """``cmd`` run with a fresh tmpfs (``opts``, e.g. ``ro`` or ``size=16k``) mounted on ``mount``."""
    return ["unshare", "-rm", "sh", "-c", f'mount -t tmpfs -o {opts} tmpfs "$0" && exec "$@"', str(mount), *cmd]


@dataclass
class Case:
    name: str
    cmd: list[str]  # {w} is replaced by the workspace
    needle: str  # what the error line must name ({w} replaced)
    mount: tuple[str, str] | None = None  # (folder, tmpfs options) for read-only / full-disk rows
    keep: list[str] = field(default_factory=list)  # paths (under {w}) whose bytes must not change
    no_gpu: bool = False  # the input is only bad on a machine without a CUDA GPU
    logs: bool = False  # the trainer logs its progress (INFO records, tqdm) on stderr before the error line


def _hash_tree(path: Path) -> str:
    h = hashlib.sha1()
    for p in sorted(path.rglob("*")) if path.is_dir() else [path]:
        if p.is_file() and p.name != LOCK_NAME:  # the lock file records its last owner, not the folder's content
            h.update(str(p.relative_to(path.parent)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def w(tmp_path_factory) -> Path:
    """The workspace: bad feeds, a tiny image store, datasets good and damaged, a tiny pipeline, a trained run."""
    import numpy as np
    from PIL import Image

    from tests.crops import write_crops_dataset

    w = tmp_path_factory.mktemp("bad")
    rec = {"article_id": "M.1704067230.A.0A1", "date": "0101", "published_at": "2024-01-01T08:00:30+08:00",
           "list_title": "[正妹] x", "url": "http://x/a.html", "list_push": 0}  # fmt: skip
    good = json.dumps(rec, ensure_ascii=False).encode()
    (w / "feed_bad_utf8.jsonl").write_bytes(good + b"\n" + good[:-2] + b'\xff\xfe"}\n')
    (w / "feed_cut_char.jsonl").write_bytes(good + b"\n" + "正".encode()[:2])  # a character cut short at EOF
    (w / "feed_images_int.jsonl").write_text(json.dumps({**rec, "images": 5}) + "\n", encoding="utf-8")
    (w / "images" / "full").mkdir(parents=True)
    img = {"url": "http://x/1.jpg", "path": "full/1.jpg", "checksum": "", "status": "downloaded"}
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(w / "images" / "full" / "1.jpg")
    (w / "feed_ok.jsonl").write_text(json.dumps({**rec, "images": [img]}) + "\n", encoding="utf-8")
    (w / "a_file").write_text("not a folder\n")
    ds = write_crops_dataset(w / "ds_ok", n=10, size=16, test=4)
    arrow = lambda d: sorted(glob.glob(str(d / "train" / "*.arrow")))[0]  # noqa: E731
    shutil.copytree(ds, w / "ds_no_arrow")
    os.unlink(arrow(w / "ds_no_arrow"))
    shutil.copytree(ds, w / "ds_cut_arrow")
    data = Path(arrow(w / "ds_cut_arrow")).read_bytes()
    Path(arrow(w / "ds_cut_arrow")).write_bytes(data[: len(data) // 2])
    shutil.copytree(ds, w / "ds_bad_dict")
    (w / "ds_bad_dict" / "dataset_dict.json").write_text("{not json")
    # a DatasetDict with a split of no rows, as ptt-curate wrote before it left empty splits out (IndexError inside
    # datasets.load_from_disk)
    from datasets import DatasetDict, load_from_disk

    whole = load_from_disk(str(ds))
    DatasetDict({"train": whole["train"], "test": whole["test"].select([])}).save_to_disk(str(w / "ds_empty_split"))
    for d in ("ds_no_arrow", "ds_cut_arrow", "ds_bad_dict", "ds_empty_split"):  # push reads <out>/dataset + report
        shutil.copytree(w / d, w / f"out_{d}" / "dataset")
        (w / f"out_{d}" / "curation_report.json").write_text("{}\n")
    (w / "gen").mkdir()
    for i in range(4):
        Image.fromarray(np.full((16, 16, 3), 40 * i, np.uint8)).save(w / "gen" / f"{i + 1:05d}.png")
    (w / "tiny.yaml").write_text(TINY_TRAIN)
    run = subprocess.run(
        [sys.executable, "training/train.py", "--config", str(w / "tiny.yaml"), f"data.dataset_dir={ds}",
         f"run_dir={w / 'run'}"], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    (w / "run" / "checkpoints" / "checkpoint-2" / "meta.json").write_text("{cut")
    for name, text in (("pipe_not_json", "{not json"), ("pipe_wrong_shape", '["not", "a", "config"]')):
        shutil.copytree(w / "run" / "pipeline", w / name)  # a damaged unet/config.json in a whole pipeline
        (w / name / "unet" / "config.json").write_text(text)
    (w / "samples_bad_info").mkdir()
    (w / "samples_bad_info" / "sample_info.json").write_text('{"model": "x", "sch')
    return w


def _py(module: str) -> list[str]:
    return [sys.executable, "-m", module]


TRAIN = [sys.executable, "training/train.py", "--config", "{w}/tiny.yaml"]
CURATE = [str(BIN / "ptt-curate"), "-q"]
SAMPLE = [str(BIN / "ptt-sample"), "--model", "{w}/run/pipeline", "--num-images", "2", "--steps", "1",
          "--no-progress", "--device", "cpu"]  # fmt: skip
FID = [str(BIN / "ptt-fid"), "--gen", "{w}/gen", "--substitute", "--cache-dir", "{w}/fidcache", "--device", "cpu"]

CASES = [
    # the feed: invalid UTF-8, a character cut at the end, "images": 5
    Case("curate/bad-utf8", [*CURATE, "feed={w}/feed_bad_utf8.jsonl", "images={w}/images", "out={w}/o1"],
         "feed_bad_utf8.jsonl:2"),
    Case("curate/cut-char", [*CURATE, "feed={w}/feed_cut_char.jsonl", "images={w}/images", "out={w}/o2"],
         "feed_cut_char.jsonl:2"),
    Case("curate/images-int", [*CURATE, "feed={w}/feed_images_int.jsonl", "images={w}/images", "out={w}/o3"],
         "feed_images_int.jsonl"),
    Case("homework/bad-utf8", [str(BIN / "ptt-homework"), "articles", "{w}/feed_bad_utf8.jsonl", "-o", "{w}/h.jsonl"],
         "feed_bad_utf8.jsonl:2"),
    Case("homework/out-in-a-file", [str(BIN / "ptt-homework"), "articles", "{w}/feed_ok.jsonl", "-o",
         "{w}/a_file/h.jsonl"], "a_file", keep=["a_file"]),
    # out= / --out / run_dir= that is a file, or read-only, or on a full disk
    Case("curate/out-is-a-file", [*CURATE, "feed={w}/feed_ok.jsonl", "images={w}/images", "out={w}/a_file"],
         "a_file", keep=["a_file"]),
    Case("curate/out-read-only", [*CURATE, "feed={w}/feed_ok.jsonl", "images={w}/images", "out={w}/ro/out"],
         "ro", mount=("ro", "ro")),
    Case("curate/disk-full", [*CURATE, "feed={w}/feed_ok.jsonl", "images={w}/images", "out={w}/full/out"],
         "disk full", mount=("full", "size=4k")),
    # a review file that is a folder (silently ignored before)
    Case("curate/review-is-a-folder", [*CURATE, "feed={w}/feed_ok.jsonl", "images={w}/images", "out={w}/o4",
         "review_path={w}/gen"], "gen: a folder, not a review file", keep=["gen"]),
    Case("sample/out-is-a-file", [*SAMPLE, "--out", "{w}/a_file"], "a_file", keep=["a_file"]),
    Case("sample/out-read-only", [*SAMPLE, "--out", "{w}/ro/s"], "ro", mount=("ro", "ro")),
    Case("sample/disk-full", [*SAMPLE, "--out", "{w}/full/s"], "full", mount=("full", "size=4k")),
    Case("sample/bad-sample-info", [*SAMPLE, "--out", "{w}/samples_bad_info"], "sample_info.json",
         keep=["samples_bad_info"]),
    # a damaged pipeline: blamed on --model (never on --out), and ptt-push --dry-run does not list it as fine
    *[Case(f"sample/{d}", [*SAMPLE, "--model", f"{{w}}/{d}", "--out", "{w}/s_" + d], f"{d}/unet/config.json",
           keep=[d]) for d in ("pipe_not_json", "pipe_wrong_shape")],
    *[Case(f"push/{d}", [str(BIN / "ptt-push"), "--model", f"{{w}}/{d}", "--repo", "u/n", "--dry-run"],
           f"{d}/unet/config.json", keep=[d]) for d in ("pipe_not_json", "pipe_wrong_shape")],
    Case("sample/device-banana", [*SAMPLE, "--out", "{w}/s_dev", "--device", "banana"], "--device banana"),
    Case("sample/device-cuda-without-gpu", [*SAMPLE, "--out", "{w}/s_dev", "--device", "cuda"], "--device cuda",
         no_gpu=True),
    # more steps than the schedule has train timesteps (the corrected rerun: tests/test_sample_folder.py)
    Case("sample/ddpm-steps-2000", [*SAMPLE, "--out", "{w}/s_steps", "--scheduler", "ddpm", "--steps", "2000"],
         "--steps 2000"),
    # a folder of PNGs no sample_info.json accounts for (the user's own 00001.png ...)
    Case("sample/foreign-pngs", [*SAMPLE, "--out", "{w}/gen"], "no sample_info.json", keep=["gen"]),
    Case("fid/inception-not-a-model", [str(BIN / "ptt-fid"), "--gen", "{w}/gen", "--ref", "{w}/gen", "--inception",
         "{w}/a_file", "--cache-dir", "{w}/fidcache", "--device", "cpu"], "a_file", keep=["a_file"]),
    Case("train/run-dir-is-a-file", [*TRAIN, "data.dataset_dir={w}/ds_ok", "run_dir={w}/a_file"], "a_file",
         keep=["a_file"], logs=True),
    Case("train/run-dir-read-only", [*TRAIN, "data.dataset_dir={w}/ds_ok", "run_dir={w}/ro/run"], "ro",
         mount=("ro", "ro"), logs=True),
    Case("train/disk-full", [*TRAIN, "data.dataset_dir={w}/ds_ok", "run_dir={w}/full/run"], "disk full",
         mount=("full", "size=48k"), logs=True),
    Case("train/bad-meta-json", [*TRAIN, "data.dataset_dir={w}/ds_ok", "run_dir={w}/run", "--resume",
         "checkpoint-2"], "checkpoint-2/meta.json", keep=["run"], logs=True),
    # a side the UNet cannot halve down its levels and back (the tiny UNet: 2 levels, so even sides only)
    Case("train/resolution-not-a-multiple", [*TRAIN, "data.dataset_dir={w}/ds_ok", "run_dir={w}/r_res",
         "data.resolution=9"], "data.resolution=9 is not a multiple of 2"),
    Case("train/resolution-dry-run", [sys.executable, "training/train.py", "--config", "configs/train/demo.yaml",
         "data.dataset_dir={w}/ds_ok", "data.resolution=30", "--dry-run"],
         "data.resolution=30 is not a multiple of 4"),
    Case("ptt-train/damaged-dataset", [str(BIN / "ptt-train"), "--config", "{w}/tiny.yaml",
         "data.dataset_dir={w}/ds_bad_dict", "run_dir={w}/r_entry"], "ds_bad_dict", logs=True),
    # damaged datasets: train, ptt-fid, ptt-curate push (which reads its input before it looks at the Hub)
    *[Case(f"curate-push/{d}", [str(BIN / "ptt-curate"), "push", "--repo", "u/n", f"{{w}}/out_{d}"], d,
           keep=[f"out_{d}"]) for d in ("ds_no_arrow", "ds_cut_arrow", "ds_bad_dict", "ds_empty_split")],
    *[Case(f"train/{d}", [*TRAIN, f"data.dataset_dir={{w}}/{d}", "run_dir={w}/r_" + d], d, keep=[d], logs=True)
      for d in ("ds_no_arrow", "ds_cut_arrow", "ds_bad_dict", "ds_empty_split")],
    *[Case(f"fid/{d}", [*FID, "--ref", f"{{w}}/{d}:train"], d, keep=[d])
      for d in ("ds_no_arrow", "ds_cut_arrow", "ds_bad_dict", "ds_empty_split")],
    Case("fid/out-json-in-a-file", [*FID, "--ref", "{w}/ds_ok:test", "--out-json", "{w}/a_file/fid.json"], "a_file",
         keep=["a_file"]),
    # the rest of the tools
    Case("push/model-is-a-file", [str(BIN / "ptt-push"), "--model", "{w}/a_file", "--repo", "u/n", "--dry-run"],
         "a_file"),
    Case("mirror/bad-port", [str(BIN / "ptt-mirror"), "--port", "99999"], "99999"),
    Case("mirror/url-file-in-a-file", [str(BIN / "ptt-mirror"), "--url-file", "{w}/a_file/url"], "a_file"),
    Case("crawl/bad-date", [sys.executable, "-m", "scrapy", "crawl", "ptt_beauty", "-L", "WARNING", "-a",
         "start_date=2024-13-01", "-a", "end_date=2024-12-31"], "start_date"),
    Case("crawl/bad-base-url", [sys.executable, "-m", "scrapy", "crawl", "ptt_beauty", "-L", "WARNING", "-a",
         "start_date=2024-01-01", "-a", "end_date=2024-12-31", "-s", "PTT_BASE_URL=ftp://x"], "PTT_BASE_URL"),
    Case("crawl/misspelt-spider-argument", [sys.executable, "-m", "scrapy", "crawl", "ptt_beauty", "-L", "WARNING",
         "-a", "start_date=2024-01-01", "-a", "end_date=2024-12-31", "-a", "keywrod=x"], "keywrod"),
    *[Case(f"crawl/{key.lower()}-{what}", [sys.executable, "-m", "scrapy", "crawl", "ptt_beauty", "-L", "WARNING",
           "-a", "start_date=2024-01-01", "-a", "end_date=2024-12-31", "-s", f"{key}={{w}}/{where}"], needle,
           mount=mount, keep=keep)
      for key in ("JOBDIR", "IMAGES_STORE")
      for what, where, needle, mount, keep in (("is-a-file", "a_file", "a_file is a file", None, ["a_file"]),
                                               ("read-only", "ro/x", "ro/x", ("ro", "ro"), []))],
    Case("mirror/negative-posts", [str(BIN / "ptt-mirror"), "--posts", "-5"], "--posts -5"),
    Case("homework/out-is-a-folder", [str(BIN / "ptt-homework"), "articles", "{w}/feed_ok.jsonl", "-o", "{w}/gen"],
         "gen: Is a directory", keep=["gen"]),
]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_one_line_not_a_traceback(case: Case, w: Path):
    sub = lambda s: s.replace("{w}", str(w))  # noqa: E731
    if case.no_gpu:
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has a CUDA GPU")
    cmd = [sub(c) for c in case.cmd]
    if case.mount:
        if not UNSHARE:
            pytest.skip("needs unshare -rm (user and mount namespaces) for a real read-only or full tmpfs")
        folder, opts = case.mount
        (w / folder).mkdir(exist_ok=True)
        cmd = _tmpfs(w / folder, opts, cmd)
    before = {k: _hash_tree(w / k) for k in case.keep}
    proc = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    if case.logs:  # its INFO/WARNING records and progress bars are allowed; ERROR records and the rest are not
        lines = [line for line in lines if not LOG_RE.match(line) and not BAR_RE.search(line)]
    assert proc.returncode != 0, proc.stdout[-1000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert len(lines) == 1, proc.stderr[-3000:]
    assert sub(case.needle) in lines[0] or case.needle in lines[0], lines[0]
    assert "error" in lines[0].lower()
    assert {k: _hash_tree(w / k) for k in case.keep} == before, "an input or earlier output changed"
