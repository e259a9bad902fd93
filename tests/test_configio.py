"""Config loading: defaults, YAML floats, overrides, and errors that name the dotted key."""

from __future__ import annotations

import pytest

from common.configio import ConfigError, StrictModel, apply_overrides, dump_config, load_config


class Optim(StrictModel):
    lr: float = 3.0e-4
    betas: tuple[float, float] = (0.9, 0.999)


class Cfg(StrictModel):
    name: str = "run"
    steps: int = 10
    optim: Optim = Optim()


def test_defaults_without_file():
    cfg = load_config(Cfg, None)
    assert cfg.steps == 10 and cfg.optim.lr == pytest.approx(3e-4)


def test_yaml_file_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("steps: 5\noptim:\n  lr: 1e-3\n", encoding="utf-8")
    cfg = load_config(Cfg, path, ["optim.lr=2e-4", "name=abc"])
    assert cfg.steps == 5
    assert cfg.optim.lr == pytest.approx(2e-4)  # a YAML-1.1 "string" float read as a float
    assert cfg.name == "abc"


def test_yaml_scientific_float_in_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  lr: 1e-3\n", encoding="utf-8")
    assert load_config(Cfg, path).optim.lr == pytest.approx(1e-3)


def test_unknown_key_names_dotted_path(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  lrr: 1.0\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(Cfg, path)
    assert "optim.lrr" in str(err.value) and str(path) in str(err.value)


def test_wrong_type_names_key():
    with pytest.raises(ConfigError, match=r"steps"):
        load_config(Cfg, None, ["steps=many"])


def test_missing_file_is_clear(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(Cfg, tmp_path / "nope.yaml")


def test_bad_override_form():
    with pytest.raises(ConfigError, match="key.sub=value"):
        apply_overrides({}, ["novalue"])
    with pytest.raises(ConfigError, match="is a value, not a section"):
        apply_overrides({"a": 1}, ["a.b=2"])


def test_dump_round_trip(tmp_path):
    cfg = load_config(Cfg, None, ["steps=7"])
    path = tmp_path / "resolved.yaml"
    path.write_text(dump_config(cfg), encoding="utf-8")
    assert load_config(Cfg, path) == cfg


def test_bad_yaml_is_one_line_with_the_line_number(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("steps: 5\noptim: [unclosed\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(Cfg, path)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{path}:") and "not valid YAML" in msg


def test_error_in_an_override_is_blamed_on_the_override_not_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("steps: 5\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(Cfg, path, ["steps=abc"])
    assert "command-line override 'steps=abc'" in str(err.value) and str(path) not in str(err.value)
    with pytest.raises(ConfigError) as err:
        load_config(Cfg, path, ["optim.lrr=1"])
    assert "command-line override 'optim.lrr=1'" in str(err.value)


def test_section_and_root_rule_errors_name_the_override_that_caused_them(tmp_path):
    from training.config import load_train_config

    path = tmp_path / "t.yaml"
    path.write_text("data:\n  dataset_dir: d\ntrain:\n  max_steps: 2\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:  # a bad model.* key is a section-level error in pydantic
        load_train_config(path, ["model.bogus=1"])
    assert str(err.value).startswith("command-line override 'model.bogus=1'") and str(path) not in str(err.value)
    with pytest.raises(ConfigError) as err:  # a cross-field rule at the root
        load_train_config(path, ["refine.enabled=true", "refine.base_run_dir=r", "augment.enabled=true"])
    assert "'augment.enabled=true'" in str(err.value) and str(path) not in str(err.value)
    # the same section error coming from the file is still the file's, even with an unrelated override
    path.write_text(path.read_text(encoding="utf-8") + "model:\n  bogus: 1\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_train_config(path, ["model.norm_num_groups=8"])
    assert str(err.value).startswith(f"{path}: model") and "override" not in str(err.value)


def test_refine_turns_augmentation_off_in_the_saved_config():
    from training.config import load_train_config

    base = ["data.dataset_dir=d", "train.max_steps=2"]
    assert load_train_config(None, base).augment.enabled is True
    cfg = load_train_config(None, [*base, "refine.enabled=true", "refine.base_run_dir=r"])
    assert cfg.augment.enabled is False and "enabled: false" in dump_config(cfg).split("augment:")[1].split("\n")[1]
    cfg.train.max_steps = 3  # re-validation on assignment keeps it off and raises nothing
    assert cfg.augment.enabled is False
