"""notebooks/free_gpu_session.ipynb runs top to bottom on the CPU at tiny size, so it never rots.

The runner is papermill's idea without papermill: the parameters cell (tagged ``parameters``) is followed by an
injected cell of test parameters, and every code cell runs in order in one namespace, as one kernel would run them.
The notebook's own commands are real (the trainer, the sampler, as subprocesses inside this checkout); the data are
a tiny crops dataset (``tests/crops.py``); nothing is installed and nothing is downloaded. A second run of the same
notebook must resume the run from its checkpoint and keep the images already sampled: a session cut off and
started again.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from tests.crops import write_crops_dataset

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "free_gpu_session.ipynb"

TINY_TRAIN = [
    "data.resolution=16",
    "train.batch_size=4",
    "train.max_steps=4",
    "train.checkpoint_every_steps=2",
    "train.sample_every_steps=null",
    "eval.heldout_every_steps=null",
    "train.log_with=none",
]


def _cells() -> list[dict]:
    return json.loads(NOTEBOOK.read_text())["cells"]


def _code(cell: dict) -> str:
    return "".join(cell["source"])


def run_notebook(params: dict) -> dict:
    """Execute the notebook's code cells in order in one namespace, ``params`` injected after the parameters cell."""
    ns: dict = {"__name__": "__main__"}
    for i, cell in enumerate(_cells()):
        if cell["cell_type"] != "code":
            continue
        exec(compile(_code(cell), f"{NOTEBOOK.name} cell {i}", "exec"), ns)
        if "parameters" in cell["metadata"].get("tags", []):
            ns.update(params)
    return ns


def test_notebook_is_plain_python_with_one_parameters_cell_first():
    code = [c for c in _cells() if c["cell_type"] == "code"]
    tagged = [c for c in code if "parameters" in c["metadata"].get("tags", [])]
    assert len(tagged) == 1 and code[0] is tagged[0]
    for c in code:  # no IPython-only syntax: the runner above and any plain kernel can execute every cell
        assert not [ln for ln in c["source"] if ln.lstrip().startswith(("!", "%"))], _code(c)[:80]
        assert not c["outputs"], "commit the notebook without outputs"
    params = {}
    exec(_code(tagged[0]), params)
    for name in ("REPO", "INSTALL", "MOUNT_DRIVE", "WORK_DIR", "DATA", "TIME_BUDGET", "TRAIN_CONFIG", "NUM_IMAGES"):
        assert name in params, name
    assert (ROOT / params["TRAIN_CONFIG"]).is_file() and (ROOT / params["CURATION_CONFIG"]).is_file()
    train_cells = [_code(c) for c in code if "training.train" in _code(c)]
    assert (
        len(train_cells) == 1 and '"latest"' in train_cells[0] and "train.time_budget={TIME_BUDGET}" in train_cells[0]
    )


def test_notebook_runs_top_to_bottom_and_a_second_session_resumes(tmp_path, monkeypatch, capsys):
    for k, v in {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.chdir(tmp_path)
    data = write_crops_dataset(tmp_path / "crops", n=24, size=16, test=4)
    work = tmp_path / "drive" / "ptt-faces"
    params = {
        "REPO": str(ROOT),
        "INSTALL": False,  # offline: the test's environment has the toolkit already
        "MOUNT_DRIVE": True,  # only mounts on Colab: must be skipped here
        "WORK_DIR": str(work),
        "RUN_NAME": "tiny",
        "DATA": "folder",
        "DATASET_DIR": str(data),
        "TRAIN_CONFIG": "configs/train/demo.yaml",
        "TIME_BUDGET": "1m",  # passed as train.time_budget (train.max_steps below still ends the tiny run first)
        "MIXED_PRECISION": "auto",
        "TRAIN_OVERRIDES": TINY_TRAIN,
        "NUM_IMAGES": 4,
        "SAMPLER": "ddim",
        "SAMPLER_STEPS": 2,
        "SAMPLE_BATCH": 4,
    }
    ns = run_notebook(params)
    first = capsys.readouterr().out
    import torch

    assert ns["IN_COLAB"] is False
    gpu = torch.cuda.is_available()
    assert ns["MIXED_PRECISION"] == (
        ("bf16" if torch.cuda.get_device_capability()[0] >= 8 else "fp16") if gpu else "no"
    )
    assert "--resume latest" in first and "starting a new run" in first
    run = work / "runs" / "tiny"
    assert (run / "pipeline" / "model_index.json").is_file()
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["checkpoint-2", "checkpoint-4"]
    zip_path = work / "images.zip"
    with zipfile.ZipFile(zip_path) as zf:
        assert zf.namelist() == ["00001.png", "00002.png", "00003.png", "00004.png"]
    mtimes = {p.name: p.stat().st_mtime_ns for p in (work / "samples" / "tiny").glob("*.png")}

    run_notebook(params)  # the next session: same notebook, same storage
    second = capsys.readouterr().out
    assert "resumed from" in second and "at step 4" in second
    assert {p.name: p.stat().st_mtime_ns for p in (work / "samples" / "tiny").glob("*.png")} == mtimes
    assert zipfile.ZipFile(zip_path).namelist() == ["00001.png", "00002.png", "00003.png", "00004.png"]


def test_notebook_rejects_an_unknown_data_source(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = {"REPO": str(ROOT), "INSTALL": False, "WORK_DIR": str(tmp_path / "w"), "DATA": "drive"}
    with pytest.raises(ValueError, match='DATA=.drive.: use "folder", "hub" or "curate"'):
        run_notebook(params)
