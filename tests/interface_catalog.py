"""What our interface package defines, and deterministic sample values for any ROS message.

`sample(cls, seed)` fills every field of a message class (recursively, including sequences and
nested messages) with values derived from `seed`, so a round trip through DDS can be checked
with `==`: a field lost or mangled on the way shows up as a difference.
"""

from __future__ import annotations

import importlib
import re
from typing import Any

INTERFACE_PACKAGE = "delivery_interfaces"


def interface_names(kind: str) -> list[str]:
    """Names of the package's interfaces of one kind ("msg", "srv" or "action"), from the
    ament index, so a new .msg file is covered by the tests without editing them."""
    from ament_index_python import get_resource

    content, _ = get_resource("rosidl_interfaces", INTERFACE_PACKAGE)
    names = set()
    for line in content.splitlines():
        folder, _, file_name = line.partition("/")
        if folder == kind and file_name.endswith(f".{kind}"):
            names.add(file_name.removesuffix(f".{kind}"))
    return sorted(names)


def interface_class(kind: str, name: str) -> Any:
    return getattr(importlib.import_module(f"{INTERFACE_PACKAGE}.{kind}"), name)


_INT_BITS = {"int8": 7, "int16": 15, "int32": 31, "int64": 63}
_UINT_BITS = {"uint8": 8, "byte": 8, "char": 8, "uint16": 16, "uint32": 32, "uint64": 64}
_SEQUENCE = re.compile(r"^sequence<(?P<inner>[^,>]+)(?:, (?P<bound>\d+))?>$")
_ARRAY = re.compile(r"^(?P<inner>.+)\[(?P<size>\d+)\]$")
_BOUNDED_STRING = re.compile(r"^(?P<kind>w?string)<=(?P<bound>\d+)$")


def _sample_value(type_name: str, seed: int) -> Any:
    if match := _SEQUENCE.match(type_name):
        length = 2 if match["bound"] is None else min(2, int(match["bound"]))
        return [_sample_value(match["inner"], seed + i + 1) for i in range(length)]
    if match := _ARRAY.match(type_name):
        return [_sample_value(match["inner"], seed + i + 1) for i in range(int(match["size"]))]
    if match := _BOUNDED_STRING.match(type_name):
        return f"s{seed}"[: int(match["bound"])]
    if type_name in ("string", "wstring"):
        return f"sample-{seed}-ü"
    if type_name == "boolean":
        return seed % 2 == 1
    if type_name in ("float", "double"):
        return seed + 0.5  # exactly representable as float32 too
    if type_name in _INT_BITS:
        return (seed % (2 ** _INT_BITS[type_name] - 1)) * (-1 if seed % 2 else 1)
    if type_name in _UINT_BITS:
        if type_name in ("byte", "char") or type_name == "octet":
            return bytes([seed % 256]) if type_name == "byte" else seed % 128
        return seed % (2 ** _UINT_BITS[type_name])
    if "/" in type_name:
        package, name = type_name.split("/")
        return sample(getattr(importlib.import_module(f"{package}.msg"), name), seed + 7)
    raise ValueError(f"no sample value for field type {type_name!r}")


def sample(cls: Any, seed: int = 1) -> Any:
    """An instance of message class `cls` with every field set from `seed`."""
    message = cls()
    for index, (field, type_name) in enumerate(cls.get_fields_and_field_types().items()):
        setattr(message, field, _sample_value(type_name, seed * 31 + index + 1))
    return message
