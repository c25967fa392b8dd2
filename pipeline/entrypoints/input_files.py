"""Reading the files a command is given, with every failure reported as one line.

:func:`parse_file` and :func:`parse_lines` are the one place where the CLI contains what
can go wrong with a file: it cannot be read (missing, a directory, no permission), its
content is bad input (:class:`~pipeline.errors.BadInput`, with the parser's reason), or the
parser fails in a way it did not mean to (any other exception: a parser bug, reported as
``internal error while parsing (LookupError: ...)`` rather than as a traceback). Each
becomes an :class:`~pipeline.errors.InputFileError` whose message names the file (and the
line) and the reason, on one line; ``cli.main`` prints it as ``alertfeed: <message>``.

With ``ALERTFEED_LOG_LEVEL=DEBUG`` the traceback of an internal error is logged as well.
``KeyboardInterrupt`` is not contained: Ctrl-C still ends the command.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from pipeline.errors import BadInput, InputFileError

log = logging.getLogger(__name__)

T = TypeVar("T")


def parse_file(path: str, parse: Callable[[bytes], T]) -> T:
    """``parse`` applied to the bytes of the file at ``path``.

    Raises :class:`InputFileError` (``<path>: <reason>``) when the file cannot be read or
    ``parse`` raises any Exception; returns what ``parse`` returns otherwise.
    """
    return _parsed(path, parse, read(path))


def parse_lines(path: str, parse_line: Callable[[bytes], T]) -> list[T]:
    """``parse_line`` applied to every line of the file at ``path`` that is not blank.

    Raises :class:`InputFileError` for a file that cannot be read, one with no line that is
    not blank, and for the first line that ``parse_line`` rejects
    (``<path> line <n>: <reason>``, numbered from 1 as an editor shows them).
    """
    data = read(path)
    parsed = [
        _parsed(f"{path} line {number}", parse_line, line)
        for number, line in enumerate(data.splitlines(), 1)
        if line.strip()
    ]
    if not parsed:
        raise InputFileError(f"{path}: {'empty file' if not data else 'only blank lines'}")
    return parsed


def read(path: str) -> bytes:
    """The bytes of the file at ``path``. Raises :class:`InputFileError` if unreadable."""
    try:
        return Path(path).read_bytes()
    except OSError as exc:  # missing, a directory, no permission, an I/O error
        raise InputFileError(f"{path}: cannot read: {_one_line(exc.strerror or exc)}") from exc
    except ValueError as exc:  # a path with a NUL byte in it
        raise InputFileError(f"{path}: cannot read: {_one_line(exc)}") from exc


def _parsed(where: str, parse: Callable[[bytes], T], data: bytes) -> T:
    try:
        return parse(data)
    except BadInput as exc:
        raise InputFileError(f"{where}: {_one_line(exc)}") from exc
    except Exception as exc:
        # Not bad input by the parser's own account: a bug, but one input file must not
        # end the command in a traceback. Name it so it can be reported and fixed.
        log.debug("internal error while parsing where=%s", where, exc_info=True)
        text = _one_line(exc)
        detail = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
        raise InputFileError(f"{where}: internal error while parsing ({detail})") from exc


def _one_line(reason: object) -> str:
    """``str(reason)`` with its line breaks (and the blanks around them) turned into one
    space each, so that an error is one line whatever an exception's text holds."""
    return " ".join(part.strip() for part in str(reason).splitlines() if part.strip())
