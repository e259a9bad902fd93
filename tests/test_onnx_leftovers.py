"""Importing onnxruntime through curation leaves nothing in ``$TMPDIR``: onnxruntime's telemetry SDK leaves
``mat-debug-<pid>.log`` and ``.ses`` (1.30) or ``.ses`` alone (1.32) there in every process that imports it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DETECT = "from curation.detect import onnx_providers; print(onnx_providers(prefer_gpu=False))"


def _run(code: str, tmp: Path) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "ORT_DISABLE_TELEMETRY"}
    env.update(TMPDIR=str(tmp), PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return sorted(p.name for p in tmp.iterdir())


def test_curation_leaves_no_mat_debug_log(tmp_path):
    (tmp_path / "ours").mkdir()
    assert _run(DETECT, tmp_path / "ours") == []


def test_plain_onnxruntime_import_does_leave_one(tmp_path):
    """The control: without the switch this onnxruntime leaves its telemetry files, so the test above shows
    something. Whether the SDK writes depends on the machine as well as the release (CI's machine wrote no
    mat-debug log where this one does): where it writes nothing, this says so as a skip rather than failing."""
    import onnxruntime

    (tmp_path / "plain").mkdir()
    left = _run("import onnxruntime", tmp_path / "plain")
    if not left:
        pytest.skip(f"onnxruntime {onnxruntime.__version__} leaves no telemetry file on this machine")
    assert [n for n in left if n == ".ses" or (n.startswith("mat-debug-") and n.endswith(".log"))], left
