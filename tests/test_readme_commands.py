"""Every command the README shows either runs as printed after `make demo`, or is skipped here for a stated reason.

A fixture runs the real ``scripts/demo.sh`` at tiny size (``DEMO_TRAIN_ARGS``: a few training steps) into a
``demo_out/`` folder of its own. Then each command block of README.md (fenced ``bash`` blocks and indented
blocks) runs in order, in one shell per block, from a working folder that holds that ``demo_out/`` and links to
the repository's ``configs/``, ``training/`` and ``scrapy.cfg``. The README's placeholder paths are read as the
demo's (``data/curated`` -> ``demo_out/curated``, ``runs/<run>`` -> ``demo_out/run``, ...) and image counts are
capped (``--num-images 10000`` -> 4): :data:`PATHS` and :data:`CAPS` list every rewrite. A command that needs the
network, a GPU-sized run or a weights download is skipped by a rule in :data:`SKIP` that says why; a command no
rule covers fails the test, so a new README command is either runnable or explicitly excused.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# README placeholder -> the demo's path (longest first, so data/curated/dataset is not cut at data/curated).
PATHS = [
    ("runs/attention_unet/best", "demo_out/run/pipeline"),
    ("runs/fast/best", "demo_out/run/pipeline"),
    ("runs/<run>/pipeline", "demo_out/run/pipeline"),
    ("data/curated/dataset", "demo_out/curated/dataset"),
    ("data/dataset", "demo_out/curated/dataset"),
    ("out/dataset", "demo_out/curated/dataset"),
    ("data/curated", "demo_out/curated"),
    ("out/curated", "demo_out/curated"),
    ("data/feed.jsonl", "demo_out/feed.jsonl"),
    ("out/feed.jsonl", "demo_out/feed.jsonl"),
    ("data/images", "demo_out/images"),
    ("out/images", "demo_out/images"),
]
# Sizes meant for a GPU, capped so a tiny CPU model finishes in seconds.
CAPS = [
    (r"--num-images \d+", "--num-images 4"),
    (r" \[--open\]", ""),  # README notation for an optional flag
]

# (pattern, reason): a command matching the pattern is not run.
SKIP = [
    (r"^make (demo|test)$", "the set-up targets themselves (this test runs inside make test, on the demo)"),
    (r"^scrapy crawl ptt_beauty(?!.*PTT_BASE_URL=\$BASE)", "crawls the real ptt.cc (no network here)"),
    (
        r"^accelerate launch training/train\.py(?!.*refine\.base_run_dir=demo_out/run )",
        "a full GPU-sized training run (hours); the demo runs the trainer",
    ),
    (r"^accelerate launch -m evaluation\.sample --model USER/", "samples a model from the Hub (no network here)"),
    (
        r"^ptt-fid(?!.*--substitute)",
        "scores thousands of samples with the real Inception (minutes on this CPU); "
        "the demo itself runs ptt-fid with it, tests/test_fid.py checks it against clean-fid",
    ),
    (r"^ptt-curate push|^ptt-push (?!.*--dry-run)", "uploads to the Hugging Face Hub (no network here)"),
    (r"^hf auth login", "logs in to the Hugging Face Hub (no network here)"),
]


def readme_blocks(text: str) -> list[list[str]]:
    """Command lines of each block: comments dropped, backslash continuations joined."""
    lines = text.splitlines()
    raw: list[list[str]] = []
    i = 0
    while i < len(lines):
        if lines[i].startswith("```bash"):
            j = i + 1
            while not lines[j].startswith("```"):
                j += 1
            raw.append(lines[i + 1 : j])
            i = j + 1
        elif lines[i].startswith("    ") and (i == 0 or not lines[i - 1].strip()) and lines[i].strip():
            block = []
            while i < len(lines) and (lines[i].startswith("    ") or not lines[i].strip()):
                block.append(lines[i][4:])
                i += 1
            raw.append(block)
        else:
            i += 1
    blocks = []
    for block in raw:
        cmds, cur = [], ""
        for line in block:
            line = re.sub(r"\s+#\s.*$", "", line).rstrip()
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            cur = f"{cur} {line.strip()}" if cur else line.strip()
            if cur.endswith("\\"):
                cur = cur[:-1].rstrip()
                continue
            cmds.append(cur)
            cur = ""
        if cmds:
            blocks.append(cmds)
    return blocks


def skip_reason(cmd: str) -> str | None:
    return next((reason for pattern, reason in SKIP if re.search(pattern, cmd)), None)


def rewrite(cmd: str) -> str:
    for old, new in PATHS:  # only at the start of a path: out/x, not demo_out/x
        cmd = re.sub(r"(?<![\w/.])" + re.escape(old), new, cmd)
    for pattern, new in CAPS:
        cmd = re.sub(pattern, new, cmd)
    return cmd


def test_block_reader_joins_continuations_and_drops_comments():
    text = "x\n\n```bash\nptt-a --b 1 \\\n    --c 2   # note\n# only a comment\nptt-d\n```\n\n    ptt-e f\n"
    assert readme_blocks(text) == [["ptt-a --b 1 --c 2", "ptt-d"], ["ptt-e f"]]
    assert rewrite("ptt-sample --model runs/<run>/pipeline --num-images 10000") == (
        "ptt-sample --model demo_out/run/pipeline --num-images 4"
    )
    assert (
        rewrite("a data/feed.jsonl out=out/curated x=demo_out/run")
        == "a demo_out/feed.jsonl out=demo_out/curated x=demo_out/run"
    )
    assert skip_reason("ptt-push --model x --repo U/N") and not skip_reason("ptt-push --model x --repo U/N --dry-run")
    assert skip_reason("ptt-fid --gen s --ref r") and not skip_reason("ptt-fid --gen s --ref r --substitute")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A folder holding a fresh tiny ``demo_out/`` (the real demo script) and links to the repo's inputs."""
    work = tmp_path_factory.mktemp("readme")
    env = dict(
        os.environ,
        PATH=f"{BIN}:{os.environ['PATH']}",
        DEMO_OUT=str(work / "demo_out"),
        DEMO_TRAIN_ARGS="train.max_steps=4 train.checkpoint_every_steps=4 train.sample_every_steps=4 "
        "train.sample_num_images=2 train.sample_steps=2 eval.heldout_every_steps=4 train.log_every_steps=2",
    )
    proc = subprocess.run(["bash", "scripts/demo.sh"], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"demo failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    for name in ("configs", "training", "scrapy.cfg"):
        (work / name).symlink_to(REPO / name)
    return work


@pytest.mark.slow
def test_every_readme_command_runs_after_the_demo_or_says_why_not(workdir):
    blocks = readme_blocks((REPO / "README.md").read_text(encoding="utf-8"))
    env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}", BROWSER="true", HF_HUB_OFFLINE="1")
    ran, skipped = [], []
    for n, block in enumerate(blocks):
        script = ["set -euo pipefail", "trap 'kill $(jobs -p) 2>/dev/null || true' EXIT"]
        for cmd in block:
            reason = skip_reason(cmd)
            if reason:
                skipped.append((cmd, reason))
                continue
            script.append(rewrite(cmd))
            ran.append(cmd)
            if cmd.startswith("ptt-mirror") and cmd.endswith("&"):  # wait for the URL file the next line reads
                script.append("for _ in $(seq 100); do [ -s mirror.url ] && break; sleep 0.1; done")
        if len(script) == 2:
            continue
        proc = subprocess.run(
            ["bash", "-c", "\n".join(script)], cwd=workdir, env=env, capture_output=True, text=True, timeout=600
        )
        assert proc.returncode == 0, (
            f"README block {n} failed (rc {proc.returncode}):\n" + "\n".join(script[2:])
            + f"\n--- stdout\n{proc.stdout[-2000:]}\n--- stderr\n{proc.stderr[-3000:]}"
        )  # fmt: skip
    assert any(c.startswith("ptt-sample") for c in ran) and any("--dry-run" in c for c in ran)
    assert (workdir / "articles.jsonl").is_file() and (workdir / "feed.jsonl").is_file()
    print(f"ran {len(ran)} README commands, skipped {len(skipped)}:")
    for cmd, reason in skipped:
        print(f"  skipped ({reason}): {cmd}")
