"""Small, typed accessors for pw.x's XML data file (``data-file-schema.xml``)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from ..errors import MlscaleError


def child(element: ET.Element, path: str) -> ET.Element:
    """The first element at ``path`` below ``element``; MlscaleError when absent."""
    found = element.find(path)
    if found is None:
        raise MlscaleError(f"pw.x XML: no <{path}> in <{element.tag}>")
    return found


def text(element: ET.Element, path: str) -> str:
    """The text of the element at ``path`` (empty string for an empty element)."""
    return child(element, path).text or ""


def attribute(element: ET.Element, path: str, name: str) -> str:
    """Attribute ``name`` of the element at ``path``; MlscaleError when absent."""
    value = child(element, path).get(name)
    if value is None:
        raise MlscaleError(f"pw.x XML: <{path}> has no attribute {name!r}")
    return value
