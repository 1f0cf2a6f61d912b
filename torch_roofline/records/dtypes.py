"""The package's one dtype vocabulary: each dtype's two spellings, its size and its other names.

Two spellings of a dtype cross the package: torch's name, in what the count sees
(:attr:`OpCost.dtype <torch_roofline.records.OpCost>`: ``"float32"``), and the short key of
datasheets and roofs (:attr:`Roof.dtype <torch_roofline.records.Roof>`: ``"fp32"``). Every
translation between them (dtype names people type, roofs looked up for an op, the element
size a what-if scales bytes by, torch dtypes a benchmark builds) reads :data:`DTYPE_TABLE`.
Imports nothing (not torch): the torch dtype of a key is ``getattr(torch, storage)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

__all__ = ["DType", "DTYPE_TABLE", "DTYPE_KEYS", "DTYPE_NAMES", "dtype_of", "key_of_name", "float_itemsize"]


@dataclass(frozen=True)
class DType:
    """One dtype of the roofs.

    Attributes:
        key: the roof key (``"fp32"``, ``"bf16"``, ``"tf32"``).
        storage: torch's name of the element type the data is stored in (``"float32"``;
            ``tf32`` is a math mode over ``float32`` storage): ``getattr(torch, storage)``.
        itemsize: bytes per element.
        floating: a floating-point type (what a dtype what-if retypes).
        torch_names: torch's names of the dtypes that map to this key (an op's ``dtype``).
        aliases: other names people use (``"half"``, ``"f16"``).
    """

    key: str
    storage: str
    itemsize: int
    floating: bool
    torch_names: Tuple[str, ...] = ()
    aliases: Tuple[str, ...] = ()


#: Every dtype with a roof, in the order tables list them.
DTYPE_TABLE: Tuple[DType, ...] = (
    DType("fp64", "float64", 8, True, ("float64",), ("double", "f64")),
    DType("fp32", "float32", 4, True, ("float32",), ("float", "f32")),
    DType("tf32", "float32", 4, True, (), ("tensorfloat32",)),
    DType("fp16", "float16", 2, True, ("float16",), ("half", "f16")),
    DType("bf16", "bfloat16", 2, True, ("bfloat16",), ()),
    DType("fp8", "float8_e4m3fn", 1, True, ("float8_e4m3fn", "float8_e5m2"), ("float8",)),
    DType("int8", "int8", 1, False, ("int8", "uint8"), ("i8", "u8")),
)

#: The roof keys, in table order.
DTYPE_KEYS: Tuple[str, ...] = tuple(d.key for d in DTYPE_TABLE)

#: Every name (key, torch name, alias; lower case, without ``"torch."``) -> its roof key.
DTYPE_NAMES: Dict[str, str] = {name: d.key for d in DTYPE_TABLE for name in (d.key, *d.torch_names, *d.aliases)}

_BY_KEY: Dict[str, DType] = {d.key: d for d in DTYPE_TABLE}


def dtype_of(key: str) -> DType:
    """The :class:`DType` of a roof key (``KeyError`` for an unknown key)."""
    return _BY_KEY[key]


def key_of_name(name: str) -> Optional[str]:
    """The roof key of a dtype name (``"bfloat16"``, ``"torch.half"``, ``"bf16"``; every
    ``float8_*`` is ``"fp8"``), or ``None`` when the name is not a dtype with a roof."""
    text = name.lower().strip()
    if text.startswith("torch."):
        text = text[len("torch."):]
    if text.startswith("float8"):
        return "fp8"
    return DTYPE_NAMES.get(text)


def float_itemsize(torch_name: str) -> Optional[int]:
    """Bytes per element of a floating-point torch dtype name (``"bfloat16"`` -> 2), else ``None``."""
    key = DTYPE_NAMES.get(torch_name)
    d = _BY_KEY[key] if key is not None else None
    return d.itemsize if d is not None and d.floating and torch_name in d.torch_names else None
