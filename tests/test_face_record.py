"""The face record is the one list of a curated face's fields: the dataset's columns, the worker's measurements,
the review page's columns and the docs' table all derive from ``curation.record.FaceRecord``."""

from __future__ import annotations

import re
from pathlib import Path

from curation.record import DATASET_COLUMNS, FIELDS, JSONL_FIELDS, MEASURED_FIELDS, PAGE_COLUMNS, column_table

ROOT = Path(__file__).resolve().parents[1]


def test_the_docs_table_is_the_record():
    docs = (ROOT / "docs" / "contracts.md").read_text(encoding="utf-8")
    assert column_table() in docs, "docs/contracts.md section 3: paste curation.record.column_table() as its table"
    rows = re.findall(r"^\| `(\w+)` \|", docs.split("## 3.")[1].split("## 4.")[0], flags=re.M)
    assert tuple(rows) == DATASET_COLUMNS


def test_every_field_but_the_image_goes_to_faces_jsonl_and_the_columns_lead():
    assert "image" not in JSONL_FIELDS and set(JSONL_FIELDS) | {"image"} == set(FIELDS)
    assert tuple(FIELDS)[: len(DATASET_COLUMNS)] == DATASET_COLUMNS  # the record reads like the dataset's table


def test_the_review_page_reads_only_page_columns():
    js = (ROOT / "curation" / "review_assets" / "review.js").read_text(encoding="utf-8")
    used = set(re.findall(r"\bf\.(\w+)", js)) & set(FIELDS)
    assert used and used <= set(PAGE_COLUMNS), f"review.js reads {sorted(used - set(PAGE_COLUMNS))} not sent to it"


def test_the_worker_measures_exactly_the_measured_fields(tmp_path):
    from curation.config import CurationConfig
    from curation.filters import sha1_bytes
    from curation.photos import process_photo
    from tests import _synth as synth

    data = synth.encode(synth.astronaut())
    (tmp_path / "a.png").write_bytes(data)
    res = process_photo(str(tmp_path / "a.png"), sha1_bytes(data), None, CurationConfig())
    assert res["status"] == "ok" and set(res["faces"][0]) == {"index", *MEASURED_FIELDS}
