"""XML bytes to an element tree, safely: the one way alertfeed reads XML.

* DOCTYPE and ENTITY declarations are refused before anything is expanded: alerts come
  from the network, and no CAP message needs them.
* The encoding named by the XML declaration is honoured when it is one the contract reads
  (UTF-8, UTF-16, ISO-8859-1, US-ASCII and the single-byte codecs Python knows); any
  other declared name is refused with a reason, before the parser sees it.
* Element and attribute names are ``{namespace}local``, as ElementTree spells them.
"""

from __future__ import annotations

import codecs
import re
import xml.etree.ElementTree as ET
from typing import NoReturn
from xml.parsers import expat

from pipeline.errors import MalformedEvent, excerpt


def parse_xml(data: bytes) -> ET.Element:
    """Parse XML bytes into an element tree, refusing DOCTYPE and ENTITY declarations.

    Raises :class:`MalformedEvent`: ``not XML: ...`` with expat's line and column, or
    naming the declared encoding when it is none the contract reads (see
    :func:`_expat_encoding`).
    """
    builder = ET.TreeBuilder()
    parser = expat.ParserCreate(_expat_encoding(data), namespace_separator="}")
    parser.buffer_text = True
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    in_prolog = True

    def start(name: str, attributes: dict[str, str]) -> None:
        nonlocal in_prolog
        in_prolog = False
        builder.start(_qualify(name), {_qualify(k): v for k, v in attributes.items()})

    def end(name: str) -> None:
        builder.end(_qualify(name))

    def doctype(name: str, *_: object) -> NoReturn:
        raise MalformedEvent(
            f"DOCTYPE declaration <!DOCTYPE {name[:40]} ...> is not allowed: "
            "alerts must not declare entities (entity-expansion guard)"
        )

    def entity(name: str, *_: object) -> NoReturn:
        raise MalformedEvent(f"ENTITY declaration {excerpt(name)} is not allowed (entity guard)")

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = builder.data
    parser.StartDoctypeDeclHandler = doctype
    parser.EntityDeclHandler = entity
    try:
        parser.Parse(data, True)
    except expat.ExpatError as exc:
        raise MalformedEvent(f"not XML: {exc}") from exc
    except (LookupError, ValueError) as exc:
        # pyexpat turns a declared encoding expat does not read itself into a byte table
        # through Python's codec of that name, while reading the XML declaration (so
        # before any element). _expat_encoding refused the codecs that fail there, but
        # multi-byte ones such as cp932 (ValueError).
        if not in_prolog:
            raise
        declared = _declared_encoding(data) or "(unreadable)"
        why = (
            "is a multi-byte encoding the XML parser cannot read"
            if isinstance(exc, ValueError) and not isinstance(exc, UnicodeError)
            else f"cannot be read ({type(exc).__name__})"
        )
        raise MalformedEvent(_encoding_reason(declared, why)) from exc
    return builder.close()


# The XML declaration at the start of a document (after a byte-order mark), in bytes with
# the zero bytes of UTF-16 removed (so it reads the same in UTF-8 and either UTF-16).
_XML_DECLARATION = re.compile(
    rb"""(?:\xef\xbb\xbf|\xff\xfe|\xfe\xff)?<\?xml\s[^>]*?\sencoding\s*=\s*["']([^"'>]*)"""
)
# Encodings expat reads itself, as it spells them and by Python's codec name.
_EXPAT_SPELLINGS = frozenset(("UTF-8", "UTF-16", "UTF-16LE", "UTF-16BE", "ISO-8859-1", "US-ASCII"))
# (For any UTF-16 alias expat is told UTF-16: it takes the byte order from the BOM or the
# first character, as for a document declaring UTF-16.)
_EXPAT_BY_CODEC = {
    "utf-8": "UTF-8",
    "utf-8-sig": "UTF-8",
    "utf-16": "UTF-16",
    "utf-16-le": "UTF-16",
    "utf-16-be": "UTF-16",
    "iso8859-1": "ISO-8859-1",
    "ascii": "US-ASCII",
}
# Python's table-driven single-byte codecs, by codec-name prefix: for these pyexpat hands
# expat a byte table. Any other codec is no character set XML can declare (hex, rot-13,
# unicode-escape, idna, punycode, undefined, utf-7, utf-32, ...).
_SINGLE_BYTE_CODECS = (
    "cp", "iso8859-", "koi8-", "mac-", "tis-620", "hp-roman8", "ptcp154", "kz1048", "palmos",
)  # fmt: skip


def _expat_encoding(data: bytes) -> str | None:
    """The encoding expat must read ``data`` in, overriding its XML declaration, or None
    to let expat follow the declaration (or its absence) itself.

    Aliases of the encodings expat reads (``utf8``, ``latin1``, ``utf-16-le``) are given
    under expat's own names, single-byte codecs Python knows (``windows-1252``,
    ``iso-8859-15``) are left to expat, and any other declared name raises
    :class:`MalformedEvent` before expat sees it: unknown ones, and codecs that are no
    character set (``unicode_escape`` would even rewrite backslashes).
    """
    declared = _declared_encoding(data)
    if declared is None or declared.upper() in _EXPAT_SPELLINGS:
        return None
    try:
        codec = codecs.lookup(declared).name
    except LookupError:
        raise MalformedEvent(
            _encoding_reason(declared, "is not an encoding Python knows")
        ) from None
    if codec in _EXPAT_BY_CODEC:
        return _EXPAT_BY_CODEC[codec]
    if codec.startswith(_SINGLE_BYTE_CODECS):
        return None
    raise MalformedEvent(_encoding_reason(declared, "is not a single-byte character set"))


def _declared_encoding(data: bytes) -> str | None:
    found = _XML_DECLARATION.match(data[:400].replace(b"\x00", b""))
    return found.group(1).decode("latin-1") if found else None


def _encoding_reason(declared: str, why: str) -> str:
    return (
        f"not XML: the declared encoding {excerpt(declared)} {why}; CAP XML must be "
        "UTF-8, UTF-16, ISO-8859-1, US-ASCII or another single-byte encoding"
    )


def _qualify(expat_name: str) -> str:
    uri, sep, local = expat_name.rpartition("}")
    return f"{{{uri}}}{local}" if sep else local
