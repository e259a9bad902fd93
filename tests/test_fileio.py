"""common.fileio: atomic writes leave no temporary file; JSONL reading turns a bad line into the caller's error."""

from __future__ import annotations

import os
import stat

import pytest

from common.fileio import atomic_write, iter_jsonl


def test_atomic_write_creates_folder_replaces_and_leaves_no_temp(tmp_path):
    path = tmp_path / "a" / "b" / "out.json"
    atomic_write(path, "第一")
    assert path.read_text(encoding="utf-8") == "第一"
    atomic_write(path, b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in path.parent.iterdir()) == ["out.json"]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644


def test_atomic_write_failure_keeps_the_old_file_and_no_temp(tmp_path):
    path = tmp_path / "out.txt"
    atomic_write(path, "old")
    with pytest.raises(TypeError):
        atomic_write(path, 123)  # not str or bytes: fails while writing
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_iter_jsonl_skips_blank_lines_and_names_the_bad_line(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"a": 1}\n\n  \n[2]\n{"a": oops}\n', encoding="utf-8")

    def bad(n, msg):
        return ValueError(f"x.jsonl:{n}: {msg}")

    got = []
    with pytest.raises(ValueError, match=r"x.jsonl:5: Expecting value"):
        for item in iter_jsonl(path, bad):
            got.append(item)
    assert got == [(1, {"a": 1}), (4, [2])]
