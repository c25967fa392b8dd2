"""The one place where a command's input files are read: whatever goes wrong with a file,
the command gets one line naming it and why."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.entrypoints.input_files import parse_file, parse_lines
from pipeline.errors import InputFileError, MalformedEvent


def unknown_codec(data: bytes) -> str:
    """A parser with a bug: an exception that is not bad input by its own account."""
    return data.decode("bogus-8")


def multi_line_failure(data: bytes) -> None:
    raise ValueError("first line\n   second line\n")


def reject_b(line: bytes) -> bytes:
    if line.strip() == b"b":
        raise MalformedEvent("b is not allowed")
    return line


def test_a_parser_bug_is_reported_as_an_internal_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.xml"
    path.write_bytes(b"<alert/>")
    with pytest.raises(InputFileError) as caught:
        parse_file(str(path), unknown_codec)
    assert str(caught.value) == (
        f"{path}: internal error while parsing (LookupError: unknown encoding: bogus-8)"
    )


def test_the_reason_is_always_one_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.xml"
    path.write_bytes(b"x")
    with pytest.raises(InputFileError) as caught:
        parse_file(str(path), multi_line_failure)
    assert str(caught.value) == (
        f"{path}: internal error while parsing (ValueError: first line second line)"
    )


def test_bad_input_keeps_the_parser_reason(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_bytes(b"a\n\nb\n")
    with pytest.raises(InputFileError) as caught:
        parse_lines(str(path), reject_b)
    assert str(caught.value) == f"{path} line 3: b is not allowed"


def test_blank_lines_are_skipped_and_the_rest_kept_in_order(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_bytes(b"x\r\n\n  \ny")
    assert parse_lines(str(path), reject_b) == [b"x", b"y"]


def test_a_path_that_cannot_name_a_file_is_unreadable() -> None:
    with pytest.raises(InputFileError) as caught:
        parse_file("bad\0name", unknown_codec)
    assert "cannot read" in str(caught.value)
