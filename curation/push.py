"""Push a curated dataset to the Hugging Face Hub with a dataset card.

The ``save_to_disk`` folder is converted to one Parquet file per split (``data/<split>-00000-of-00001.parquet``,
the layout ``datasets.load_dataset(repo)`` reads), written beside a ``README.md`` card (counts, filters,
thresholds, sources, a note on the people in the photos) and ``curation_report.json``, then uploaded with
``huggingface_hub.HfApi.upload_folder``. The token comes from ``huggingface-cli login`` or ``HF_TOKEN``
(huggingface_hub's own lookup); it is never printed or logged.

Example::

    from curation.push import build_card, stage_upload
    folder = stage_upload("demo_out/curated", "/tmp/stage", repo_id="me/ptt-faces-64")   # no network
    print(open(folder / "README.md").read()[:200])
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

__all__ = ["PushError", "build_card", "stage_upload", "push_dataset"]


class PushError(RuntimeError):
    """The push cannot proceed; the message says why and what to do."""


def build_card(report: dict, repo_id: str) -> str:
    """Dataset card (YAML header + markdown) from a curation report."""
    faces = report.get("faces", {})
    photos = report.get("photos", {})
    rej = {k: v for k, v in report.get("rejected", {}).items() if v}
    th = report.get("thresholds", {})
    lines = [
        "---",
        "license: other",
        "task_categories:",
        "- unconditional-image-generation",
        "size_categories:",
        "- n<1K" if faces.get("kept", 0) < 1000 else "- 1K<n<10K" if faces.get("kept", 0) < 10000 else "- 10K<n<100K",
        "configs:",
        "- config_name: default",
        "  data_files:",
        "  - split: train",
        "    path: data/train-*",
        "  - split: test",
        "    path: data/test-*",
        "---",
        "",
        f"# {repo_id}",
        "",
        "Aligned 64x64 RGB face crops curated by `ptt-curate` (ptt-faces) from photos linked in posts of the PTT",
        "Beauty board, for training small unconditional diffusion models.",
        "",
        "## Counts",
        "",
        f"- posts read: {report.get('posts', 0)}; photos in the feed: {photos.get('in', 0)} "
        f"({photos.get('unique', 0)} unique)",
        f"- faces detected: {faces.get('detected', 0)}; kept: {faces.get('kept', 0)} "
        f"(train {faces.get('train', 0)}, test {faces.get('test', 0)})",
        f"- pose of kept faces: {json.dumps(faces.get('pose', {}))}; "
        f"gender label: {json.dumps(faces.get('gender', {}))}",
        "",
        "## Filters and rejects",
        "",
        "| reason | rejected |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in rej.items()],
        "",
        "Thresholds used:",
        "",
        *[f"- `{k}`: {v}" for k, v in th.items()],
        "",
        f"Detector: {report.get('detector', {}).get('backend', '?')} (5 landmarks), similarity alignment to a loose",
        "template keeping forehead and chin; borders outside the photo reflected and blurred.",
        "",
        "## Columns",
        "",
        "`image` (64x64 RGB), `face_id`, `article_id`, `image_url`, `published_at`, `face_score`, `blur_var`,",
        "`eye_distance`, `eye_brightness`, `yaw`, `pose`, `gender`, `phash`.",
        "",
        "## Sources",
        "",
        "Photos linked from public posts on the PTT Beauty board (https://www.ptt.cc/bbs/Beauty/); each row keeps",
        "the post's `article_id`, `published_at` and the source `image_url`. The copyright of each photo stays",
        "with its owner; this dataset is for research on generative models.",
        "",
        "## The people in these photos",
        "",
        "These are real, identifiable people who did not consent to being in a machine-learning dataset.",
        "Do not use this dataset to identify, track, profile or sexualise anyone, nor for face recognition.",
        "The `gender` column is an automatic guess from a small classifier and is often wrong; it is not a",
        "statement about anyone's identity. Anyone who wants a photo removed can ask, and it will be removed.",
        "",
    ]
    return "\n".join(lines)


def stage_upload(out_dir: str | Path, stage_dir: str | Path, *, repo_id: str) -> Path:
    """Write the upload folder (Parquet per split, README.md, curation_report.json) into ``stage_dir``."""
    out = Path(out_dir)
    ds_dir = out / "dataset"
    report_path = out / "curation_report.json"
    if not ds_dir.is_dir() or not report_path.is_file():
        raise PushError(f"{out}: no dataset/ or curation_report.json; run ptt-curate ... out={out} first")
    import datasets
    from datasets import load_from_disk

    datasets.disable_progress_bars()
    dd = load_from_disk(str(ds_dir))
    stage = Path(stage_dir)
    shutil.rmtree(stage, ignore_errors=True)
    (stage / "data").mkdir(parents=True)
    for split, ds in dd.items():
        ds.to_parquet(str(stage / "data" / f"{split}-00000-of-00001.parquet"))
    report = json.loads(report_path.read_text(encoding="utf-8"))
    (stage / "README.md").write_text(build_card(report, repo_id), encoding="utf-8")
    shutil.copy(report_path, stage / "curation_report.json")
    return stage


def push_dataset(out_dir: str | Path, repo_id: str, *, private: bool = False) -> str:
    """Upload; returns the dataset URL. Raises PushError with the reason when offline or not logged in."""
    if "/" not in repo_id or repo_id.count("/") != 1:
        raise PushError(f"--repo {repo_id!r}: expected USER/NAME")
    import importlib
    import tempfile

    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError, OfflineModeIsEnabled

    net_errors: tuple[type[BaseException], ...] = (OSError, ConnectionError)
    for mod, name in (("httpx", "TransportError"), ("httpx2", "TransportError"), ("requests", "RequestException")):
        try:  # whichever HTTP client this huggingface_hub uses
            net_errors += (getattr(importlib.import_module(mod), name),)
        except (ImportError, AttributeError):
            pass

    with tempfile.TemporaryDirectory(prefix="ptt-push-") as tmp:
        stage = stage_upload(out_dir, Path(tmp) / "stage", repo_id=repo_id)
        api = HfApi()
        try:
            api.create_repo(repo_id, repo_type="dataset", exist_ok=True, private=private)
            api.upload_folder(
                folder_path=str(stage), repo_id=repo_id, repo_type="dataset", commit_message="ptt-curate push"
            )
        except LocalTokenNotFoundError:
            raise PushError(
                "no Hugging Face token: run `hf auth login` (or `huggingface-cli login`) "
                "or set HF_TOKEN to a token with write access"
            ) from None
        except OfflineModeIsEnabled:
            raise PushError(
                "HF_HUB_OFFLINE=1 is set: the Hub cannot be reached; unset it on a connected machine"
            ) from None
        except HfHubHTTPError as exc:
            code = getattr(getattr(exc, "response", None), "status_code", None)
            if code in (401, 403):
                raise PushError(
                    f"the Hub refused the token (HTTP {code}); run `huggingface-cli login` "
                    "or set HF_TOKEN to a token with write access"
                ) from None
            raise PushError(f"the Hub answered an error pushing {repo_id}: {str(exc).splitlines()[0]}") from None
        except net_errors as exc:
            raise PushError(f"cannot reach the Hub ({type(exc).__name__}); check the network and retry") from None
    return f"https://huggingface.co/datasets/{repo_id}"
