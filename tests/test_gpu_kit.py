"""The GPU kit (benchmarks/gpu/, benchmarks/bench_peer.py) on the CPU: its scripts parse, its pure parts compute.

The kit runs on a lent H200 only a few minutes per task, so whatever can break before the GPU is checked here:
the shell scripts' syntax, the wheel list, the device-call plan, the peer's command line against the peer's own
argparse, our trainer's overrides against the config schema, the rate/memory/table arithmetic of bench_peer,
preflight's requirement check and compare_weights. The end-to-end CPU dry run of bench_peer is marked slow.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[1]
GPU = ROOT / "benchmarks" / "gpu"
sys.path.insert(0, str(GPU))
sys.path.insert(0, str(ROOT))


@pytest.mark.parametrize("script", ["run_device.sh", "fetch_wheels.sh"])
def test_shell_scripts_parse(script):
    subprocess.run(["bash", "-n", str(GPU / script)], check=True)


@pytest.mark.parametrize(
    "module", ["preflight", "check_run", "compare_weights", "interrupt_train", "profile_step", "sample_defaults"]
)
def test_kit_scripts_compile_and_have_help(module):
    r = subprocess.run(
        [sys.executable, str(GPU / f"{module}.py"), "--help"], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert r.returncode in (0, 2), r.stderr  # preflight prints its doc with status 2
    assert "usage" in (r.stdout + r.stderr).lower() or "Example" in r.stdout + r.stderr


def test_plan_fits_the_device_budget():
    head = (GPU / "run_device.sh").read_text()
    calls = re.findall(
        r'run\(command="bash benchmarks/gpu/run_device.sh ([^"]+)", carry=(\[[^\]]*\]), timeout_s=(\d+)\)', head
    )
    assert len(calls) >= 2, "the header names the device calls in order"
    steps = {s for c in calls[:2] for s in c[0].split()}
    assert {"preflight", "check", "profile", "peer", "sample"} <= steps
    for _, carry, timeout in calls:
        assert ".whl" in carry and int(timeout) <= 600
    assert re.search(r"total ~1[0-4] min", head), "the plan states an expected total under 15 minutes"
    for step in ("preflight", "check", "profile", "peer", "sample", "train", "ablate"):
        assert re.search(rf"^\s+{step}\)", head, re.M), f"run_device.sh has a {step} step"


def _wheel_lines():
    for line in (GPU / "wheels.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            kind, _, req = line.rpartition(":")
            yield kind.strip() or "base", req.strip()


def test_wheels_list_pins_the_venv_versions_and_never_torch():
    import importlib.metadata as md

    lines = list(_wheel_lines())
    assert {k for k, _ in lines} <= {"base", "cond", "pyarrow"}
    names = set()
    for _kind, req in lines:
        name, _, ver = req.partition("==")
        assert ver, f"{req}: pin an exact version"
        assert name.lower() not in {"torch", "torchvision", "triton"}, "never install torch on the device"
        assert name.lower() not in names, f"{name} twice: two versions stop the install there"
        names.add(name.lower())
        try:
            have = md.version(name)
        except md.PackageNotFoundError:
            continue
        assert have == ver, f"{name}: wheels.txt has {ver}, the CPU venv {have}"
    assert {"diffusers", "datasets", "pydantic", "pydantic_core"} <= names


def test_preflight_needed_picks_only_fallbacks_for_failing_requirements(tmp_path):
    import preflight

    site = tmp_path / "site"
    info = site / "demo_pkg-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: demo-pkg\nVersion: 1.0\n"
        "Requires-Dist: packaging<=0.1\nRequires-Dist: pytest>=1\nRequires-Dist: nothing-here-xyz\n"
        'Requires-Dist: numpy<0.1; extra == "fast"\n'
    )
    cond = tmp_path / "cond"
    cond.mkdir()
    for w in (
        "packaging-0.1-py3-none-any.whl",
        "pytest-99.0-py3-none-any.whl",
        "nothing_here_xyz-1.0-py3-none-any.whl",
        "numpy-0.0-py3-none-any.whl",
    ):
        (cond / w).write_bytes(b"")
    got = sorted(p.name for p in preflight.needed(site, [str(cond), str(tmp_path / "absent")]))
    # packaging fails <=0.1, nothing-here-xyz is missing; pytest is met; numpy's requirement is an extra's
    assert got == ["nothing_here_xyz-1.0-py3-none-any.whl", "packaging-0.1-py3-none-any.whl"]
    assert preflight.wheel_name("pydantic_core-2.50.5-cp312-cp312-manylinux2014_x86_64.whl") == (
        "pydantic-core",
        "2.50.5",
    )


def test_compare_weights(tmp_path):
    import compare_weights
    import torch
    from safetensors.torch import save_file

    def run(name, bump=0.0):
        d = tmp_path / name
        (d / "checkpoints" / "checkpoint-4").mkdir(parents=True)
        (d / "pipeline" / "unet").mkdir(parents=True)
        w = {"a": torch.arange(6.0).reshape(2, 3), "b": torch.ones(3)}
        save_file(w, str(d / "checkpoints" / "checkpoint-4" / "model.safetensors"))
        save_file(
            {k: v + bump for k, v in w.items()}, str(d / "pipeline" / "unet" / "diffusion_pytorch_model.safetensors")
        )
        return d

    a, b, c = run("a"), run("b"), run("c", bump=0.5)
    assert compare_weights.compare(a, b)["max_abs_diff"] == 0.0
    res = compare_weights.compare(a, c)
    assert res["step"] == 4 and res["max_abs_diff"] == pytest.approx(0.5)
    assert res["files"]["checkpoint-4/model.safetensors"]["max_abs_diff"] == 0.0
    assert compare_weights.compare(a, tmp_path / "none")["error"].startswith("no checkpoint step")
    from check_run import verdict

    assert verdict(0.0, 0.0) == "identical" and verdict(1e-3, 0.0) == "DIFFERS"
    assert verdict(2e-5, 1e-5).startswith("within") and verdict(None, None) == "NOT COMPARED"


def test_bench_peer_rates_and_memory():
    from benchmarks.bench_peer import parse_smi, rate_from_events, rate_from_metrics

    events = [(100.0 + 0.5 * s, s) for s in range(1, 11)]  # 0.5 s per step
    r = rate_from_events(events, batch=128, skip=4)
    assert r["images_per_s"] == pytest.approx(256.0) and r["steps_timed"] == 6
    assert rate_from_events(events[:1], 128, 0)["images_per_s"] is None
    rows = [
        {"step": 4, "images_per_s": 10.0},
        {"step": 8, "images_per_s": 256.0},
        {"step": 12, "images_per_s": 128.0},
        {"step": 12, "heldout_loss": 0.1},
    ]
    m = rate_from_metrics(rows, batch=128, skip=4)
    assert m["steps_timed"] == 8 and m["images_per_s"] == pytest.approx(8 * 128 / (2 + 4))
    assert rate_from_metrics(rows, 128, 12)["images_per_s"] is None
    assert parse_smi(["1024\n", " 80000 \n", "junk\n", "512, 3\n"]) == 80000.0
    assert parse_smi([]) is None


def test_bench_peer_tensorboard_events(tmp_path):
    pytest.importorskip("tensorboard")
    from torch.utils.tensorboard import SummaryWriter

    from benchmarks.bench_peer import tb_scalars

    w = SummaryWriter(str(tmp_path / "logs" / "run"))
    for s in range(1, 6):
        w.add_scalar("loss", 1.0 / s, global_step=s, walltime=1000.0 + s)
        w.add_scalar("lr", 0.1, global_step=s, walltime=1000.0 + s)
    w.close()
    ev = tb_scalars(tmp_path / "logs")
    assert sorted(s for _, s in ev) == [1, 2, 3, 4, 5]
    assert dict((s, t) for t, s in ev)[3] == pytest.approx(1003.0)


def test_bench_peer_table_and_ratios():
    from benchmarks.bench_peer import finish, markdown

    res = {
        "machine": {"gpu": "NVIDIA H200"},
        "batch": 128,
        "steps": 32,
        "skip": 8,
        "peer_workers": 0,
        "matmul_tflops": 790.0,
        "presets": [
            {
                "preset": "attention_unet",
                "parameters": 89_500_000,
                "train_gflops_per_image": 206.0,
                "rows": [
                    {"trainer": "peer", "rc": 0, "images_per_s": 500.0, "max_memory_allocated_mb": 30000.0},
                    {"trainer": "ours", "rc": 0, "images_per_s": 1500.0, "smi_peak_mib": 20000.0},
                    {"trainer": "ours + torch.compile", "rc": 1, "images_per_s": None},
                ],
            }
        ],
    }
    finish(res, 790e12)
    rows = res["presets"][0]["rows"]
    assert rows[1]["x_peer"] == pytest.approx(3.0)
    assert rows[1]["mfu"] == pytest.approx(206e9 * 1500 / 790e12)
    assert len(res["problems"]) == 1 and "compile" in res["problems"][0]
    md = markdown(res)
    assert "| attention_unet | ours | 1500.0 | 3.00 |" in md and "problems:" in md


def _peer_file() -> Path:
    from benchmarks.bench_peer import PEER_CANDIDATES

    for p in PEER_CANDIDATES:
        if p.is_file():
            return p
    pytest.skip("the peer (../shared/peers or .whl/peers) is not here")


def test_peer_command_line_uses_only_the_peers_own_flags(tmp_path):
    from benchmarks.bench_peer import peer_argv

    peer = _peer_file()
    src = peer.read_text()
    args = SimpleNamespace(batch=128, peer_workers=0)
    argv = peer_argv(peer, tmp_path / "img", tmp_path / "cfg", tmp_path / "out", args)
    flags = [a for a in argv if a.startswith("--")]
    for f in flags:
        assert f'"{f}"' in src, f"the peer has no {f}"
    for required in ("--train_data_dir", "--model_config_name_or_path", "--mixed_precision", "--train_batch_size"):
        assert required in flags
    assert argv[argv.index("--mixed_precision") + 1] == "bf16"
    assert argv[argv.index("--train_batch_size") + 1] == "128"


@pytest.mark.parametrize("preset", ["attention_unet", "diffusers_example"])
def test_our_benchmark_overrides_are_valid_config(preset, tmp_path):
    from benchmarks.bench_peer import VARIANTS, ours_argv
    from training.config import load_train_config

    args = SimpleNamespace(batch=128, steps=32, log_every=4)
    for extra in VARIANTS.values():
        argv = ours_argv(preset, tmp_path / "ds", tmp_path / "run", args, extra)
        cfg = load_train_config(argv[1], argv[2:])
        assert cfg.train.batch_size == 128 and cfg.train.max_steps == 32
        assert cfg.train.mixed_precision == "bf16" and cfg.train.sample_every_steps is None
        assert cfg.eval.fid_every_steps is None and cfg.eval.heldout_every_steps is None
        assert cfg.data.test_split is None


def test_profile_kernel_families():
    from profile_step import by_family, family

    assert (
        family("void cutlass::Kernel2<cutlass_80_wmma_tensorop_bf16_s161616gemm_bf16_32x32_128x2_tn_align8>")
        == "matmul"
    )
    assert family("sm90_xmma_fprop_implicit_gemm_bf16bf16_bf16f32_f32_nhwckrsc_nhwc") == "convolution"
    assert family("pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits>") == "attention"
    assert family("void at::native::(anonymous namespace)::RowwiseMomentsCUDAKernel<float>") == "group norm"
    assert family("[memory]") == "other"
    fams = by_family([("x_gemm", 3.0), ("flash_bwd", 5.0), ("y_gemm", 4.0)])
    assert list(fams) == ["matmul", "attention"] and fams["matmul"] == 7.0


@pytest.mark.slow
def test_bench_peer_cpu_dry_run(tmp_path):
    """The whole peer step at tiny size on the CPU (~90 s on 2 cores): both trainers run, rates and JSON come out."""
    _peer_file()
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "benchmarks/bench_peer.py",
        "--presets",
        "demo",
        "--batch",
        "4",
        "--steps",
        "6",
        "--skip",
        "2",
        "--log-every",
        "2",
        "--variants",
        "ours",
        "--work",
        str(tmp_path / "work"),
        "--out",
        str(out),
    ]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    res = json.loads((out / "peer.json").read_text())
    rows = res["presets"][0]["rows"]
    assert res["complete"] and [row["rc"] for row in rows] == [0, 0]
    assert all(row["images_per_s"] > 0 for row in rows) and rows[0]["steps_timed"] == 4
    assert "| demo | ours (preset, bf16) |" in (out / "summary.md").read_text()
