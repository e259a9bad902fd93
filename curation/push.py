"""Push a curated dataset to the Hugging Face Hub with a dataset card.

The ``save_to_disk`` folder is converted to one Parquet file per split (``data/<split>-00000-of-00001.parquet``,
the layout ``datasets.load_dataset(repo)`` reads, images embedded), written beside a ``README.md`` card (front
matter through ``huggingface_hub.DatasetCardData`` with ``dataset_info`` -- features, splits, sizes -- and
``configs`` as ``DatasetDict.push_to_hub`` writes them; counts, filters, thresholds, sources, a note on the people
in the photos) and ``curation_report.json`` (local paths made relative to the output folder, or names only).
Symbolic links in ``dataset/`` or as the report are refused. After a push, ``<out>/hub_push.json`` records the
repo, so a model trained on ``<out>/dataset`` links it from its card (:func:`pushed_dataset_repo`). The folder is
uploaded with ``huggingface_hub.HfApi.upload_folder``. The token comes from ``huggingface-cli login`` or ``HF_TOKEN``
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

from huggingface_hub import DatasetCardData

from common.fileio import atomic_write_json
from common.hub import PushError, hub_errors, hub_token, is_repo_id, require_repo_id
from common.paths import scrub_paths
from curation.record import DATASET_COLUMNS

__all__ = [
    "PUSH_RECORD",
    "PushError",
    "build_card",
    "card_data",
    "stage_upload",
    "push_dataset",
    "pushed_dataset_repo",
]

# Written into the output folder after a push: {"repo_id", "url", "private"}; the model card links that repo.
PUSH_RECORD = "hub_push.json"


def _size_category(n: int) -> str:
    """The Hub's size_categories bucket for ``n`` rows."""
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return name
    return "n>1M"


def card_data(report: dict, dataset_info=None) -> DatasetCardData:
    """The card's front matter as ``huggingface_hub.DatasetCardData``.

    ``dataset_info`` (a ``datasets.DatasetInfo`` with features, splits and sizes) is written the way
    ``DatasetDict.push_to_hub`` writes it (``DatasetInfosDict.to_dataset_card_data``), beside the ``configs`` entry
    that maps each split to its Parquet file.
    """
    from datasets.info import DatasetInfosDict
    from datasets.utils.metadata import MetadataConfigs

    kept = report.get("faces", {}).get("kept", 0)
    data = DatasetCardData(
        license="other",
        task_categories=["unconditional-image-generation"],
        size_categories=[_size_category(kept)],
        pretty_name="PTT Beauty faces (64x64, aligned)",
        tags=["faces", "ptt-faces", "image"],
    )
    splits = list(dataset_info.splits) if dataset_info is not None and dataset_info.splits else ["train", "test"]
    if dataset_info is not None:
        DatasetInfosDict({"default": dataset_info}).to_dataset_card_data(data)
    files = [{"split": split, "path": f"data/{split}-*"} for split in splits]
    MetadataConfigs({"default": {"data_files": files}}).to_dataset_card_data(data)
    return data


def build_card(report: dict, repo_id: str, data: DatasetCardData | None = None) -> str:
    """Dataset card (YAML front matter from :func:`card_data` + markdown) from a curation report."""
    faces = report.get("faces", {})
    photos = report.get("photos", {})
    rej = {k: v for k, v in report.get("rejected", {}).items() if v}
    th = report.get("thresholds", {})
    data = data if data is not None else card_data(report)
    lines = [
        "---",
        data.to_yaml(),
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
        ", ".join(f"`{c}`" + (" (64x64 RGB)" if c == "image" else "") for c in DATASET_COLUMNS) + ".",
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


def _refuse_links(out: Path, paths: list[Path]) -> None:
    """Only regular files inside ``out`` go up: a link (or a file resolving outside) could carry a token along."""
    root = out.resolve()
    for p in paths:
        for q in [p, *(f for f in p.rglob("*") if p.is_dir() and not p.is_symlink())]:
            if q.is_symlink() or not q.resolve().is_relative_to(root):
                raise PushError(
                    f"{q}: a symbolic link (or outside {out}); ptt-curate push uploads only regular files written by "
                    "ptt-curate: replace it with the file itself or rerun ptt-curate"
                )


def stage_upload(out_dir: str | Path, stage_dir: str | Path, *, repo_id: str) -> Path:
    """Write the upload folder (Parquet per split, README.md, curation_report.json) into ``stage_dir``.

    Images are embedded in the Parquet files as ``push_to_hub`` does (bytes, file names only); the report goes up
    with local paths relative to the output folder or reduced to names (``common.paths.scrub_paths``).
    """
    from curation.generations import current_set

    out = Path(out_dir)
    set_dir = current_set(out)  # dataset and report of one generation, even while a curation run publishes another
    ds_dir = set_dir / "dataset"
    report_path = set_dir / "curation_report.json"
    if not ds_dir.is_dir() or not report_path.is_file():
        raise PushError(f"{out}: no dataset/ or curation_report.json; run ptt-curate ... out={out} first")
    _refuse_links(out, [ds_dir, report_path])
    import datasets
    from datasets import DatasetInfo, SplitDict, SplitInfo
    from datasets.table import embed_table_storage

    from curation.store import DatasetFolderError, open_dataset

    datasets.disable_progress_bars()
    try:
        dd = open_dataset(ds_dir)
    except DatasetFolderError as exc:
        raise PushError(str(exc)) from None
    if not isinstance(dd, datasets.DatasetDict):
        raise PushError(f"{ds_dir}: not a DatasetDict with train/test splits; write it again with ptt-curate")
    stage = Path(stage_dir)
    shutil.rmtree(stage, ignore_errors=True)
    (stage / "data").mkdir(parents=True)
    features = next(iter(dd.values())).features
    info = DatasetInfo(features=features, splits=SplitDict(), download_size=0, dataset_size=0)
    for split, ds in dd.items():
        nbytes = ds._estimate_nbytes()  # what push_to_hub records as the split's num_bytes
        embedded = ds.with_format("arrow").map(embed_table_storage, batched=True, keep_in_memory=True)
        parquet = stage / "data" / f"{split}-00000-of-00001.parquet"
        embedded.to_parquet(str(parquet))
        info.splits.add(SplitInfo(name=split, num_bytes=nbytes, num_examples=len(ds)))
        info.download_size += parquet.stat().st_size
        info.dataset_size += nbytes
    info.size_in_bytes = info.download_size + info.dataset_size
    report = json.loads(report_path.read_text(encoding="utf-8"))
    public_report = scrub_paths(report, base=out)
    (stage / "README.md").write_text(build_card(public_report, repo_id, card_data(report, info)), encoding="utf-8")
    (stage / "curation_report.json").write_text(
        json.dumps(public_report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    return stage


def push_dataset(out_dir: str | Path, repo_id: str, *, private: bool = False) -> str:
    """Upload; returns the dataset URL. Raises PushError with the reason when offline or not logged in."""
    require_repo_id(repo_id)
    import tempfile

    from huggingface_hub import HfApi

    with tempfile.TemporaryDirectory(prefix="ptt-push-") as tmp:
        stage = stage_upload(out_dir, Path(tmp) / "stage", repo_id=repo_id)  # the local input is checked first
        token = hub_token()
        api = HfApi(token=token)
        with hub_errors(repo_id, token):
            url = api.create_repo(repo_id, repo_type="dataset", exist_ok=True, private=private)
            api.upload_folder(
                folder_path=str(stage), repo_id=repo_id, repo_type="dataset", commit_message="ptt-curate push"
            )
    atomic_write_json(Path(out_dir) / PUSH_RECORD, {"repo_id": repo_id, "url": str(url), "private": private})
    return str(url)


def pushed_dataset_repo(dataset_dir: str | Path | None) -> str | None:
    """The Hub repo a curated ``<out>/dataset`` was pushed to (``<out>/hub_push.json``), or None."""
    if not dataset_dir:
        return None
    record = Path(dataset_dir).parent / PUSH_RECORD
    try:
        repo = json.loads(record.read_text(encoding="utf-8")).get("repo_id")
    except (OSError, ValueError, AttributeError):
        return None
    return repo if is_repo_id(repo) else None
