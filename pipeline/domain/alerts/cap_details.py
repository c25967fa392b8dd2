"""Alert details beyond the area: AMBER people and vehicle, and images worth showing.

AMBER parameters: producers name these parameters inconsistently: ``ChildName``, ``child_name`` and
``CHILD-NAME`` all occur. Names are therefore compared after folding case and dropping
every character that is not a letter or digit (``childname`` for all three).

The mapping is best-effort and never raises: a parameter it does not know is ignored, and
a detail it cannot find stays empty. The first non-empty value of a field wins, so callers
put the parameters of the primary ``<info>`` first.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterable, Mapping

from pipeline.domain.models import Geocode, Image, Person, Vehicle

_NOT_ALNUM = re.compile(r"[^0-9a-z]+")

_PERSON_FIELDS: Mapping[str, str] = {
    "name": "name",
    "fullname": "name",
    "age": "age",
    "sex": "sex",
    "gender": "sex",
    "height": "height",
    "weight": "weight",
    "hair": "hair",
    "haircolor": "hair",
    "haircolour": "hair",
    "eyes": "eyes",
    "eye": "eyes",
    "eyecolor": "eyes",
    "eyecolour": "eyes",
    "description": "description",
    "desc": "description",
    "clothing": "description",
}

_CHILD_PREFIXES = ("child", "missingchild", "victim")
_SUSPECT_PREFIXES = ("suspect", "abductor")

_VEHICLE_FIELDS: Mapping[str, str] = {
    "make": "make",
    "model": "model",
    "year": "year",
    "color": "color",
    "colour": "color",
    "plate": "license_plate",
    "licenseplate": "license_plate",
    "licence": "license_plate",
    "license": "license_plate",
    "tag": "license_plate",
    "platestate": "license_state",
    "licensestate": "license_state",
    "licenseplatestate": "license_state",
    "tagstate": "license_state",
    "state": "license_state",
    "description": "description",
    "desc": "description",
}

# Plate parameters are often named without the "vehicle" prefix.
_UNPREFIXED_VEHICLE_FIELDS: Mapping[str, str] = {
    "licenseplate": "license_plate",
    "licenseplatenumber": "license_plate",
    "licenceplate": "license_plate",
    "plate": "license_plate",
    "platenumber": "license_plate",
    "licensestate": "license_state",
    "licenseplatestate": "license_state",
    "platestate": "license_state",
}


def fold_name(name: str) -> str:
    """``ChildName``, ``child_name``, ``CHILD-NAME`` -> ``childname``."""
    return _NOT_ALNUM.sub("", name.lower())


def amber_details(
    parameters: Iterable[Geocode],
) -> tuple[Person | None, Person | None, Vehicle | None]:
    """Return ``(child, suspect, vehicle)`` found in ``parameters``.

    Each is ``None`` when no parameter fills any of its fields. Never raises.
    """
    child: dict[str, str] = {}
    suspect: dict[str, str] = {}
    vehicle: dict[str, str] = {}
    for parameter in parameters:
        value = parameter.value.strip()
        if not value:
            continue
        key = fold_name(parameter.name)
        target, field = _classify(key)
        if target is None:
            continue
        bucket = {"child": child, "suspect": suspect, "vehicle": vehicle}[target]
        bucket.setdefault(field, value)
    return (
        Person(**child) if child else None,
        Person(**suspect) if suspect else None,
        Vehicle(**vehicle) if vehicle else None,
    )


def _classify(key: str) -> tuple[str | None, str]:
    for prefixes, target in ((_CHILD_PREFIXES, "child"), (_SUSPECT_PREFIXES, "suspect")):
        for prefix in prefixes:
            if key.startswith(prefix) and key[len(prefix) :] in _PERSON_FIELDS:
                return target, _PERSON_FIELDS[key[len(prefix) :]]
    if key.startswith("vehicle") and key[len("vehicle") :] in _VEHICLE_FIELDS:
        return "vehicle", _VEHICLE_FIELDS[key[len("vehicle") :]]
    if key in _UNPREFIXED_VEHICLE_FIELDS:
        return "vehicle", _UNPREFIXED_VEHICLE_FIELDS[key]
    return None, ""


# CAP's <size> is a byte count; more digits than this is no real image (and int() refuses
# a string of over 4,300 digits).
_MAX_SIZE_DIGITS = 15


def _byte_count(size: str) -> int | None:
    """``<size>`` as an int, or None unless it is plain ASCII digits of a sane length
    (``str.isdigit`` alone admits ``"²"``, which ``int`` refuses)."""
    if size.isascii() and size.isdigit() and len(size) <= _MAX_SIZE_DIGITS:
        return int(size)
    return None


def image_from_resource(
    *, mime_type: str, uri: str, inline: str, digest: str, size: str, description: str
) -> Image | None:
    """The :class:`Image` for one CAP ``<resource>``, or ``None`` when it is not one.

    Only ``image/*`` resources with a ``uri`` or an inline payload count. The base64
    payload (``inline``) is never kept: it gives the digest (``sha1:<hex>``, CAP's own
    ``<digest>`` when present) and the size, then is dropped. A payload that is not
    base64 drops the image rather than the alert. Never raises.
    """
    if not mime_type.lower().startswith("image/"):
        return None
    size_bytes = _byte_count(size)
    if inline and (not digest or size_bytes is None):
        try:
            payload = base64.b64decode(inline)
        except ValueError:  # binascii.Error for bad base64, ValueError for non-ASCII text
            return None
        digest = digest or hashlib.sha1(payload, usedforsecurity=False).hexdigest()
        size_bytes = len(payload) if size_bytes is None else size_bytes
    if not uri and not digest:
        return None
    if digest and ":" not in digest:
        digest = f"sha1:{digest.lower()}"
    return Image(
        uri=uri, mime_type=mime_type, description=description, digest=digest, size=size_bytes
    )
