"""Shared test set-up: offline Hub, CPU only, and paths to the read-only corpus in ../shared."""

from __future__ import annotations

import os
from pathlib import Path

# Offline and CPU-only for every test, before any library reads these.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_PTT_HTML = REPO_ROOT.parent / "shared" / "ptt_html"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_ptt_html() -> Path:
    if not SHARED_PTT_HTML.is_dir():
        pytest.skip(f"{SHARED_PTT_HTML} is absent (the read-only corpus of real PTT pages lives beside the repo)")
    return SHARED_PTT_HTML


@pytest.fixture(scope="session")
def ds16(tmp_path_factory) -> Path:
    """A real DatasetDict folder of 24 face crops at 16x16 (19 train, 5 test); read-only for the tests."""
    from tests.trainkit import make_dataset

    return make_dataset(tmp_path_factory.mktemp("ds") / "dataset")


@pytest.fixture(scope="session")
def tiny_cfg(tmp_path_factory) -> Path:
    """The tiny training config (tests/trainkit.py TINY) as a file."""
    from tests.trainkit import TINY

    p = tmp_path_factory.mktemp("cfg") / "tiny.yaml"
    p.write_text(TINY)
    return p


@pytest.fixture
def fresh_accelerate_state(monkeypatch):
    """An in-process training run starts and ends with accelerate's process-wide state forgotten, and without a
    launcher's mixed-precision setting from the environment."""
    from tests.trainkit import reset_accelerate_state

    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    reset_accelerate_state()
    yield
    reset_accelerate_state()


@pytest.fixture
def keep_process_settings():
    """A quality benchmark's ``main()`` sets torch's thread count and quietens the project's loggers
    (``bench_quality.QUIET_LOGGERS``): put both back for later tests."""
    import logging

    import torch

    from benchmarks.bench_quality import QUIET_LOGGERS

    levels, threads = {n: logging.getLogger(n).level for n in QUIET_LOGGERS}, torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def registry_weights(key: str) -> Path:
    """The checked file of network ``key`` (common/weights.py), as ``make test`` puts it in place.

    Skips when it is missing, unless ``PTT_REQUIRE_WEIGHTS=1`` (set by ``make test``, whose setup step runs
    ``ptt-weights fetch``): there a missing file fails the test instead of hiding a real-weight path.
    """
    from common.weights import NETWORKS, locate, missing_message

    found = locate(NETWORKS[key])
    if found is None:
        msg = f"{missing_message(NETWORKS[key])} (make test fetches it)"
        if os.environ.get("PTT_REQUIRE_WEIGHTS") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    return found.path
