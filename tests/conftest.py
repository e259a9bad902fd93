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
