"""The curated dataset folder (contracts.md section 3): its writer and its one reader, side by side.

``<out>/dataset/`` is a ``datasets.DatasetDict`` saved with ``save_to_disk``, splits ``train`` and ``test`` (a
split with no faces is left out), an ``image`` column (64x64 RGB PNGs) and the other
``curation.record.DATASET_COLUMNS`` (types and meanings in ``curation.record.FaceRecord``). ``ptt-curate`` writes
it through :func:`write_dataset`; every reader (the trainer's ``data.dataset_dir``, ``ptt-fid --ref``) opens it
through :func:`read_split`, which also takes a bare ``Dataset`` folder (``save_to_disk`` of one split) and says in
one line, as a :class:`DatasetFolderError`, what is wrong with anything else.

Example::

    from curation.store import read_split
    ds, split = read_split("demo_out/curated/dataset", "test")
    print(split, len(ds), ds.column_names)
"""

from __future__ import annotations

from pathlib import Path

from common.fileio import atomic_replace_dir
from curation.record import DATASET_COLUMNS, FIELDS, FaceRecord

__all__ = ["DatasetFolderError", "is_dataset_dir", "open_dataset", "read_split", "write_dataset"]


class DatasetFolderError(ValueError):
    """Not a readable curated dataset (or not the split asked for); callers prefix the option that named it."""


def is_dataset_dir(path: str | Path) -> bool:
    """True for a ``save_to_disk`` folder (a DatasetDict or a bare Dataset)."""
    path = Path(path)
    return path.is_dir() and ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file())


def read_split(path: str | Path, split: str | None, *, default: str = "train", required: bool = True):
    """``(dataset or None, split name)``. A DatasetDict folder gives its ``split`` (``default`` when None); a
    missing split is an error when ``required``, else ``(None, split)``. A bare Dataset folder is the whole set:
    returned for ``split`` None or ``"train"``, or whenever ``required``; named ``split or "all"``."""
    import datasets

    obj = open_dataset(path)
    if isinstance(obj, datasets.DatasetDict):
        split = split or default
        if split not in obj:
            if required:
                raise DatasetFolderError(f"{path}: no split {split!r}; it has {', '.join(obj)}")
            return None, split
        return obj[split], split
    if split in (None, "train") or required:
        return obj, split or "all"
    return None, split


def open_dataset(path: str | Path):
    """``datasets.load_from_disk(path)`` (a DatasetDict or a Dataset), or one :class:`DatasetFolderError` line
    saying what is wrong: missing, not a datasets folder, or damaged (a cut-short arrow file, a bad JSON)."""
    import datasets

    path = Path(path)
    if not path.exists():
        raise DatasetFolderError(
            f"{path} does not exist; run `ptt-curate` first (it writes <out>/dataset) or point at a datasets "
            "folder written by save_to_disk"
        )
    try:  # resolved once: <out>/dataset is a link through <out>/.current, which a curation run may swap meanwhile
        obj = datasets.load_from_disk(str(path.resolve()))
    except FileNotFoundError as exc:
        raise DatasetFolderError(f"{path} is not a datasets folder (save_to_disk output): {exc}") from None
    except IndexError:  # a split saved with no rows has no shard; datasets cannot load it
        raise DatasetFolderError(
            f"{path}: a split with no rows (written by an older ptt-curate, which datasets cannot load); "
            "run ptt-curate again (it leaves an empty split out)"
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as exc:  # a cut-short .arrow, a bad dataset_dict.json
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise DatasetFolderError(
            f"{path}: damaged datasets folder ({type(exc).__name__}: {first}); write it again with `ptt-curate` "
            "(or save_to_disk)"
        ) from None
    return obj


def write_dataset(target: Path, kept: list[FaceRecord]) -> None:
    """``kept`` records (each with its ``split``) as a ``DatasetDict`` folder of the ``DATASET_COLUMNS``:
    ``save_to_disk`` into a temp folder beside ``target``, then swapped in (never a half-written dataset). A split
    with no faces is left out: ``datasets.load_from_disk`` cannot load an empty one."""
    import datasets
    from datasets import Dataset, DatasetDict, Features, Image, Value

    datasets.disable_progress_bars()  # our own bar covers the run; theirs would print one line per split

    dtype = {c: FIELDS[c].dtype for c in DATASET_COLUMNS}
    features = Features({c: Image() if dtype[c] == "image" else Value(dtype[c]) for c in DATASET_COLUMNS})
    splits = {}
    for split in ("train", "test"):
        part = [r for r in kept if r["split"] == split]
        if not part:
            continue
        cols: dict[str, list] = {
            c: [{"bytes": r[c], "path": None} if dtype[c] == "image" else r[c] for r in part] for c in DATASET_COLUMNS
        }
        splits[split] = Dataset.from_dict(cols, features=features)
    with atomic_replace_dir(target) as tmp:
        DatasetDict(splits).save_to_disk(str(tmp))
