"""Finding a catalog row by id, marketing name or ``torch.cuda.get_device_name()`` string.

Order of the search, first hit wins:

1. exact name: the id, the name, an alias or a torch name, compared after lower-casing and
   dropping spaces, hyphens and vendor words (``"NVIDIA GeForce RTX 4090"`` == ``"rtx4090"``);
2. substring rules: each row's ``match`` strings (vetoed by ``exclude``), rows in file order,
   most specific first (L40S before L4); when several rows match, a unit count (SMs/CUs)
   or a memory size given by the caller picks among them (MI250X vs MI250);
3. otherwise :class:`UnknownDeviceError`, listing the closest names (difflib).
"""

from __future__ import annotations

import difflib
import re
from typing import Iterable, List, Optional, Sequence, Tuple

from torch_roofline.devices._catalog import Entry, catalog_entries
from torch_roofline.devices._device import Device

__all__ = ["UnknownDeviceError", "find_entry", "normalize", "get", "catalog"]

_VENDOR_WORDS = ("nvidia", "geforce", "tesla", "amd", "instinct", "intel", "core", "google", "cloud")


class UnknownDeviceError(KeyError, ValueError):
    """No catalog row for a device name. Subclasses KeyError and ValueError."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


def normalize(name: str) -> str:
    """Name key for exact comparison: lower case, vendor words and punctuation dropped."""
    words = re.split(r"[^a-z0-9]+", name.lower())
    return "".join(w for w in words if w and w not in _VENDOR_WORDS)


def _substring_hits(name: str, entries: Iterable[Entry]) -> List[Entry]:
    text = " ".join(name.lower().split())
    return [
        e for e in entries
        if any(m in text for m in e.match) and not any(x in text for x in e.exclude)
    ]


def _pick(hits: Sequence[Entry], units: Optional[int], memory_bytes: Optional[int]) -> Entry:
    """The first hit, unless a unit count or memory size singles out a later one."""
    if units is not None:
        same = [e for e in hits if e.units == units]
        if same:
            hits = same
    if memory_bytes is not None:
        # torch reports a little less than the marketed size (reserved memory): allow 10 %.
        close = [
            e for e in hits
            if e.device.memory_bytes and abs(e.device.memory_bytes - memory_bytes) <= 0.1 * e.device.memory_bytes
        ]
        if close:
            hits = close
    return hits[0]


def find_entry(
    name: str,
    *,
    units: Optional[int] = None,
    memory_bytes: Optional[int] = None,
    entries: Optional[Tuple[Entry, ...]] = None,
) -> Entry:
    """The catalog entry for ``name``; see the module docstring for the order of the search.

    Args:
        name: an id (``"h100-sxm"``), a marketing name (``"L40S"``) or a torch device name.
        units: SM / CU count of the actual device, to tell apart rows sharing a name.
        memory_bytes: total memory of the actual device in bytes, for the same purpose.
        entries: rows to search; the packaged catalog by default.

    Raises:
        UnknownDeviceError: no row matches; the message lists the closest names.
    """
    entries = catalog_entries() if entries is None else entries
    key = normalize(name)
    exact = [e for e in entries if key and any(normalize(n) == key for n in e.names)]
    hits = list(dict.fromkeys(exact + _substring_hits(name, entries)))
    if hits:
        return _pick(hits, units, memory_bytes)
    raise UnknownDeviceError(_unknown_message(name, entries))


def _unknown_message(name: str, entries: Sequence[Entry]) -> str:
    key = normalize(name)
    partial = [e.device.id for e in entries if key and any(key in normalize(n) for n in e.names)]
    by_key = {normalize(n): e.device.id for e in entries for n in e.names}
    close = difflib.get_close_matches(key, list(by_key), n=5, cutoff=0.5)
    suggestions = list(dict.fromkeys(partial + [by_key[c] for c in close]))[:6]
    hint = (
        f"closest catalog devices: {', '.join(suggestions)}"
        if suggestions else f"catalog ids: {', '.join(e.device.id for e in entries)}"
    )
    return (
        f"unknown device {name!r}: {hint}. Pass one of those ids, or give your own roofs: "
        f"Device(name=..., peak_flops={{'fp32': ...}}, bandwidth=...) or load_file('roofs.toml')"
    )


def get(
    name: str,
    *,
    multi_processor_count: Optional[int] = None,
    total_memory: Optional[int] = None,
) -> Device:
    """The catalog Device for an id, a marketing name or a ``torch.cuda.get_device_name()``.

    Args:
        name: ``"h100-sxm"``, ``"L40S"``, ``"NVIDIA A100-SXM4-40GB"``,
            ``"AMD Instinct MI250X / MI250"``...
        multi_processor_count: SMs/CUs of the actual device: picks among rows that share a
            name (104 CUs -> MI250, 110 -> MI250X).
        total_memory: bytes of device memory, for the same purpose.

    Raises:
        UnknownDeviceError: no row matches; the message lists the closest catalog names.
    """
    return find_entry(name, units=multi_processor_count, memory_bytes=total_memory).device


def catalog() -> List[Device]:
    """Every catalog Device, most specific names first (the order lookup tries them)."""
    return [e.device for e in catalog_entries()]
