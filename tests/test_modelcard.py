"""Model card: FID/KID with how they were computed, the substitute label, the sample grid, config fallbacks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from PIL import Image

from evaluation.features import SUBSTITUTE_LABEL
from evaluation.modelcard import write_model_card


@pytest.fixture
def pipeline(tmp_path):
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    blocks = {"down_block_types": ("DownBlock2D",) * 2, "up_block_types": ("UpBlock2D",) * 2}
    unet = UNet2DModel(sample_size=16, block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4, **blocks)
    path = tmp_path / "pipeline"
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler()).save_pretrained(str(path), safe_serialization=True)
    return path


SUBSTITUTE_METRICS = {
    "fid": 12.3456, "kid": 0.012345, "mode": "clean", "feature_extractor": "substitute-randconv-v1",
    "comparable": False, "n_gen": 200, "n_ref": 57, "ref": "demo_out/dataset:test", "note": SUBSTITUTE_LABEL,
    "scheduler": "ddim", "steps": 50, "seed": 0, "step": 400,
}  # fmt: skip


def _front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def test_card_carries_metrics_protocol_grid_and_config(pipeline):
    grid = np.zeros((34, 34, 3), np.uint8)
    config = "data:\n  dataset_dir: demo_out/dataset\noptim:\n  lr: 0.0003\n"
    path = write_model_card(pipeline, metrics=SUBSTITUTE_METRICS, config=config, sample_grid=grid)
    text = path.read_text()
    front = _front_matter(text)
    assert front["library_name"] == "diffusers" and front["pipeline_tag"] == "unconditional-image-generation"
    assert "model-index" not in front  # substitute figures are never published as FID
    assert f"| FID ({SUBSTITUTE_LABEL}) | 12.346 |" in text and f"| KID ({SUBSTITUTE_LABEL}) | 0.01235 |" in text
    assert "clean-fid `clean`" in text and "generated images: 200" in text and "reference images: 57" in text
    assert "`demo_out/dataset:test`" in text and "sampler: ddim, 50 steps, seed 0" in text
    assert "training step 400" in text
    assert SUBSTITUTE_LABEL in text
    assert "![samples](sample_grid.png)" in text
    with Image.open(pipeline / "sample_grid.png") as im:
        assert im.size == (34, 34)
    assert "dataset `demo_out/dataset`" in text and "lr: 0.0003" in text
    assert "`block_out_channels` | `[8, 16]`" in text


def test_comparable_fid_goes_into_model_index_without_label(pipeline, tmp_path):
    metrics = dict(SUBSTITUTE_METRICS, comparable=True, feature_extractor="inception-v3-torchscript (clean-fid)")
    metrics.pop("note")
    grid_png = tmp_path / "g.png"
    Image.fromarray(np.full((8, 8, 3), 7, np.uint8)).save(grid_png)
    text = write_model_card(pipeline, metrics=metrics, sample_grid=grid_png).read_text()
    front = _front_matter(text)
    fid = front["model-index"][0]["results"][0]["metrics"][0]
    assert fid == {"type": "fid", "value": 12.346, "name": "FID (clean-fid)", "config": "clean"}
    assert SUBSTITUTE_LABEL not in text and "| FID | 12.346 |" in text and "# ptt-faces: 16x16 face DDPM" in text
    assert (pipeline / "sample_grid.png").read_bytes() == grid_png.read_bytes()


def test_falls_back_to_files_in_the_folder(pipeline):
    text = write_model_card(pipeline).read_text()
    assert "Not evaluated yet" in text and "sample_grid.png" not in text and "## Training config" not in text
    (pipeline / "metrics.json").write_text(json.dumps(SUBSTITUTE_METRICS))
    (pipeline / "training_config.yaml").write_text("seed: 1234\n")
    text = write_model_card(pipeline).read_text()
    assert f"| FID ({SUBSTITUTE_LABEL}) | 12.346 |" in text and "seed: 1234" in text
    assert not list(pipeline.glob(".README*"))  # atomic write left no temp file


def test_missing_folder_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such pipeline folder"):
        write_model_card(tmp_path / "nope")


def _round_trip(text: str):
    """The card as huggingface_hub reads it (raises on a model-index it cannot parse)."""
    from huggingface_hub import ModelCard

    return ModelCard(text).data


def test_every_card_round_trips_through_huggingface_hub_model_card(pipeline):
    from evaluation.modelcard import card_data

    comparable = dict(SUBSTITUTE_METRICS, comparable=True, feature_extractor="inception-v3-torchscript (clean-fid)")
    comparable.pop("note")
    for metrics, dataset_repo in ((comparable, "me/ptt-beauty-faces"), (comparable, None), (SUBSTITUTE_METRICS, None),
                                  (None, "me/ptt-beauty-faces")):  # fmt: skip
        text = write_model_card(pipeline, metrics=metrics, dataset_repo=dataset_repo).read_text()
        data = _round_trip(text)
        expected = card_data(metrics=metrics, dataset_repo=dataset_repo)
        assert data.to_dict() == expected.to_dict()
        assert data.library_name == "diffusers" and data.pipeline_tag == "unconditional-image-generation"
        assert data.license == "mit" and "ddpm" in data.tags
        assert data.datasets == ([dataset_repo] if dataset_repo else None)
        if metrics is comparable:
            fid, kid = data.eval_results
            assert (fid.metric_type, fid.metric_value, kid.metric_type, kid.metric_value) == ("fid", 12.346, "kid",
                                                                                              0.01235)  # fmt: skip
            assert fid.dataset_split == "test" and fid.task_type == "unconditional-image-generation"
            assert fid.dataset_type == (dataset_repo or "ptt-beauty-faces")
            assert data.eval_results == expected.eval_results
        else:
            assert data.eval_results is None  # substitute (or no) figures are never published as FID results


def test_the_dataset_link_comes_from_the_config_hub_dataset(pipeline):
    text = write_model_card(pipeline, config="data:\n  hub_dataset: me/faces-64\n").read_text()
    assert _round_trip(text).datasets == ["me/faces-64"]
    assert "(https://huggingface.co/datasets/me/faces-64)" in text


def test_no_local_absolute_path_in_the_card(pipeline, tmp_path):
    home = str(tmp_path / "home" / "me")
    config = (f"run_dir: {home}/runs/attention_unet\ndata:\n  dataset_dir: {home}/curated/dataset\n"
              f"refine:\n  lpips_backbone_path: {home}/.cache/alexnet.pth\n")  # fmt: skip
    metrics = dict(SUBSTITUTE_METRICS, ref=f"{home}/curated/dataset:test")
    text = write_model_card(pipeline, metrics=metrics, config=config).read_text()
    assert home not in text and str(tmp_path) not in text
    assert "`dataset:test`" in text and "dataset `dataset`" in text and "run_dir: attention_unet" in text


def test_the_card_names_the_exported_sampler_and_its_step_count(pipeline):
    """The card tells DDPMPipeline users which scheduler scheduler/ holds and the num_inference_steps to pass."""
    from evaluation.samplers import DEFAULT_SAMPLER, DEFAULT_STEPS, PIPELINE_SAMPLER, SAMPLERS

    text = write_model_card(pipeline).read_text()
    spec, steps = SAMPLERS[PIPELINE_SAMPLER], DEFAULT_STEPS[PIPELINE_SAMPLER]
    assert f"pipe(num_inference_steps={steps})" in text
    assert f"`{spec.scheduler_class}`" in text and f"`{PIPELINE_SAMPLER}`" in text
    assert f"`{DEFAULT_SAMPLER}`, {DEFAULT_STEPS[DEFAULT_SAMPLER]} steps" in text  # ptt-sample's default
    assert all(f"`{k}={v!r}`" in text for k, v in spec.options.items())
    assert "DDIMScheduler" not in text  # the old advice (DDIM 50) is gone
