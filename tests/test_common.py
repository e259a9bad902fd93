"""The common base: one reading of HF_HUB_OFFLINE, whole-folder swaps, and fsync before and after the rename."""

from __future__ import annotations

import os

import pytest

from common.fileio import atomic_replace_dir, atomic_write
from common.hub import hub_offline, hub_token


@pytest.mark.parametrize(
    ("value", "offline"),
    [
        ("1", True),
        ("true", True),
        ("YES", True),
        ("on", True),
        ("0", False),
        ("no", False),
        ("off", False),
        ("", False),
    ],
)
def test_hub_offline_reads_the_variable_as_huggingface_hub_does(monkeypatch, value, offline):
    from huggingface_hub import constants

    monkeypatch.delenv("PTT_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", value)
    assert hub_offline() is offline
    assert constants._is_true(value) is offline  # the library's own parser agrees


def test_every_stage_uses_the_one_offline_check(monkeypatch):
    """HF_HUB_OFFLINE=no used to mean offline in features.py and online in push.py/sample.py."""
    from evaluation import features, pipeline, push

    monkeypatch.delenv("PTT_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "no")
    assert features._offline() is False
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert features._offline() is True
    with pytest.raises(push.PushError, match="HF_HUB_OFFLINE"):
        push.hub_token()
    assert pipeline.hub_offline is hub_offline and push.hub_token is hub_token  # common.hub's offline check


def test_atomic_replace_dir_swaps_whole_folders_and_keeps_the_old_one_on_error(tmp_path):
    target = tmp_path / "dataset"
    with atomic_replace_dir(target) as tmp:
        (tmp / "a.txt").write_text("one")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dataset"] and (target / "a.txt").read_text() == "one"
    with pytest.raises(RuntimeError), atomic_replace_dir(target) as tmp:
        (tmp / "b.txt").write_text("half")
        raise RuntimeError("crash mid-write")
    assert sorted(p.name for p in target.iterdir()) == ["a.txt"]  # the old folder, untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dataset"]  # no temp or old folder left
    with atomic_replace_dir(target) as tmp:
        (tmp / "c.txt").write_text("two")
    assert sorted(p.name for p in target.iterdir()) == ["c.txt"]
    with atomic_replace_dir(target) as tmp:
        tmp.rmdir()  # the block decided there is nothing to keep: the target goes
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_fsyncs_the_file_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.path.isdir(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(a, b):
        events.append(("replace", None))
        return real_replace(a, b)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    atomic_write(tmp_path / "x.txt", "data")
    assert events == [("fsync", False), ("replace", None), ("fsync", True)]


def test_every_hub_failure_is_one_line_without_the_token():
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError

    from common.hub import PushError, hub_errors

    token = "hf_secret123"
    refused = HfHubHTTPError(
        f"401 for Bearer {token}", response=httpx2.Response(401, request=httpx2.Request("POST", "https://hub"))
    )
    cases = {
        refused: "push to me/x failed: the Hub refused the token (HTTP 401); run `hf auth login`",
        LocalTokenNotFoundError("none"): "no Hugging Face token",
        ConnectionResetError(f"reset {token}"): "push to me/x failed: cannot reach the Hub (ConnectionResetError)",
        ValueError(f"bad card {token}\nsecond line"): "push to me/x failed: ValueError: bad card ***",
    }
    for exc, start in cases.items():
        with pytest.raises(PushError) as got, hub_errors("me/x", token):
            raise exc
        msg = str(got.value)
        assert msg.startswith(start) and token not in msg and "\n" not in msg, msg
