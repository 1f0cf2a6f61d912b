"""Reading roofs files (the packaged ``catalog.toml`` and users' TOML/YAML) into Devices.

The file format is documented at the top of ``catalog.toml``: peaks in TFLOP/s, bandwidths
in decimal GB/s, memory in GiB, L2 in MiB; this module converts them to FLOP/s, B/s and
bytes. Rows of the packaged catalog must give a provenance for every number; rows of a
user's file may omit it (their source is ``"user"``).
"""

from __future__ import annotations

import copy
import functools
import math
import os
from dataclasses import dataclass
from importlib import resources
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

from torch_roofline.devices._device import DTYPES, Device

try:
    import tomllib
except ImportError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

__all__ = ["Entry", "CatalogError", "catalog_entries", "catalog_sources", "read_entries", "load_file"]

_TERA = 1e12
_GIGA = 1e9
# file field -> (Device provenance key, scale to SI)
_SCALARS: Dict[str, Tuple[str, float]] = {
    "memory_bandwidth_gbs": ("memory_bandwidth", _GIGA),
    "memory_gib": ("memory_bytes", 2.0**30),
    "l2_mib": ("l2_bytes", 2.0**20),
    "interconnect_gbs": ("interconnect_bandwidth", _GIGA),
    "units": ("units", 1.0),
    "clock_mhz": ("clock", 1e6),
}
_TEXT = ("id", "name", "vendor", "kind", "arch", "notes", "interconnect", "base")
_LISTS = ("match", "exclude", "aliases", "torch_names")
_ALLOWED = set(_SCALARS) | set(_TEXT) | set(_LISTS) | {"matrix", "vector", "provenance"}
_NOT_INHERITED = ("id", "name", "match", "exclude", "aliases", "torch_names", "base")
_PROVENANCE_KINDS = ("read", "read-thirdparty", "derived", "estimated", "measured", "user")


class CatalogError(ValueError):
    """A roofs file that does not follow the documented format."""


@dataclass(frozen=True)
class Entry:
    """One row of a roofs file: the Device plus what lookup needs to find it.

    Attributes:
        device: the roofs.
        match: lower-case substrings of a device name that select this row.
        exclude: lower-case substrings that veto ``match``.
        names: exact names (id, name, aliases, torch names) that select this row.
        torch_names: exact ``torch.cuda.get_device_name()`` strings observed for it.
        units: SMs / CUs / cores, ``None`` if unknown.
        clock_hz: the clock the peaks assume, ``None`` if unknown.
        interconnect: the link ``interconnect_bandwidth`` refers to, in words.
    """

    device: Device
    match: Tuple[str, ...]
    exclude: Tuple[str, ...]
    names: Tuple[str, ...]
    torch_names: Tuple[str, ...]
    units: Optional[int]
    clock_hz: Optional[float]
    interconnect: str


def _number_fields(row: Mapping[str, Any]) -> List[str]:
    """The numbers a catalog row gives: its scalar keys, then ``matrix.<dtype>``/``vector.<dtype>``."""
    fields = [k for k in _SCALARS if k in row]
    return fields + [f"{unit}.{d}" for unit in ("matrix", "vector") for d in row.get(unit, {})]


def _expand_provenance(row: Mapping[str, Any], where: str) -> Dict[str, str]:
    """``{"vector.*, memory_gib": "read [x]"}`` -> ``{"vector.fp32": ..., "memory_gib": ...}``."""
    fields = _number_fields(row)
    out: Dict[str, str] = {}
    for keys, text in row.get("provenance", {}).items():
        for key in (k.strip() for k in keys.split(",")):
            if key.endswith(".*"):
                hits = [f for f in fields if f.startswith(key[:-1])]
            else:
                hits = [key] if key in fields else []
            if not hits:
                raise CatalogError(f"{where}: provenance key {key!r} names no number of the row")
            for hit in hits:
                out[hit] = str(text)
    return out


def _check_provenance(row: Mapping[str, Any], prov: Mapping[str, str], where: str) -> None:
    """Every number of a catalog row has a provenance of a known kind."""
    for field in _number_fields(row):
        text = prov.get(field)
        if text is None:
            raise CatalogError(f"{where}: {field} has no provenance; add it to [device.provenance]")
        if text.split(" ")[0] not in _PROVENANCE_KINDS:
            raise CatalogError(
                f"{where}: provenance of {field} = {text!r}: expected it to start with one of "
                f"{', '.join(_PROVENANCE_KINDS)}"
            )


def _resolve_bases(rows: List[Dict[str, Any]], path: str) -> List[Dict[str, Any]]:
    """Copy each ``base`` row's numbers and provenance under the row's own values."""
    by_id: Dict[str, Dict[str, Any]] = {}
    for row in rows:
        if "id" in row:
            by_id[row["id"]] = row
    out = []
    for i, row in enumerate(rows):
        base_id = row.get("base")
        if base_id is None:
            out.append(row)
            continue
        if base_id not in by_id or by_id[base_id].get("base"):
            raise CatalogError(
                f"{path} device #{i + 1} ({row.get('id')}): base = {base_id!r} must be the id "
                f"of a row without a base of its own"
            )
        merged = {k: copy.deepcopy(v) for k, v in by_id[base_id].items() if k not in _NOT_INHERITED}
        prov = dict(merged.pop("provenance", {}))
        prov.update(row.get("provenance", {}))
        merged.update({k: v for k, v in row.items() if k != "provenance"})
        merged["provenance"] = prov
        out.append(merged)
    return out


def _device_field(file_field: str) -> str:
    """File field name -> Device provenance key: ``"matrix.bf16"`` -> ``"bf16:matrix"``."""
    if "." in file_field:
        unit, dtype = file_field.split(".")
        return f"{dtype}:{unit}"
    return _SCALARS[file_field][0]


def _positive(value: Any, field: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CatalogError(f"{where}: {field} = {value!r}: expected a number")
    if not (value > 0 and math.isfinite(value)):
        raise CatalogError(
            f"{where}: {field} = {value!r}: expected a positive finite number "
            f"(leave the field out when it is unknown)"
        )
    return float(value)


def _row_to_entry(row: Mapping[str, Any], *, source: str, where: str, strict: bool) -> Entry:
    unknown = set(row) - _ALLOWED
    if unknown:
        raise CatalogError(f"{where}: unknown field(s) {sorted(unknown)}; allowed: {sorted(_ALLOWED)}")
    if "name" not in row:
        raise CatalogError(f"{where}: every device needs a name")
    if "memory_bandwidth_gbs" not in row:
        raise CatalogError(f"{where}: memory_bandwidth_gbs (decimal GB/s) is required")
    prov = _expand_provenance(row, where)
    if strict:
        _check_provenance(row, prov, where)
    peaks: Dict[str, float] = {}
    for unit in ("matrix", "vector"):
        for dtype, value in row.get(unit, {}).items():
            if dtype not in DTYPES:
                raise CatalogError(f"{where}: {unit}.{dtype}: expected a dtype in {DTYPES}")
            # round to whole FLOP/s: 66.9 * 1e12 is 66900000000000.01 in binary floating point
            peaks[f"{dtype}:{unit}"] = float(round(_positive(value, f"{unit}.{dtype}", where) * _TERA))
    si: Dict[str, Optional[float]] = {}
    for field, (key, scale) in _SCALARS.items():
        si[key] = float(round(_positive(row[field], field, where) * scale)) if field in row else None
    provenance = {_device_field(k): v for k, v in prov.items()}
    if not strict:
        label = f"user file {where}"
        for key in [*peaks, *(k for k, v in si.items() if v is not None)]:
            provenance.setdefault(key, f"user ({label})")
    device = Device(
        name=str(row["name"]),
        id=row.get("id"),
        source=source,
        memory_bandwidth=si["memory_bandwidth"],
        peaks=peaks,
        memory_bytes=None if si["memory_bytes"] is None else round(si["memory_bytes"]),
        l2_bytes=None if si["l2_bytes"] is None else round(si["l2_bytes"]),
        interconnect_bandwidth=si["interconnect_bandwidth"],
        provenance=provenance,
        vendor=str(row.get("vendor", "")),
        kind=str(row.get("kind", "")),
        arch=str(row.get("arch", "")),
        notes=str(row.get("notes", "")),
    )
    names = [device.id, device.name, *row.get("aliases", ()), *row.get("torch_names", ())]
    return Entry(
        device=device,
        match=tuple(m.lower() for m in row.get("match", ())),
        exclude=tuple(e.lower() for e in row.get("exclude", ())),
        names=tuple(dict.fromkeys(names)),
        torch_names=tuple(row.get("torch_names", ())),
        units=None if si["units"] is None else int(si["units"]),
        clock_hz=si["clock"],
        interconnect=str(row.get("interconnect", "")),
    )


def _parse(path: str, text: str) -> Dict[str, Any]:
    if path.endswith((".yaml", ".yml")):
        try:
            import yaml
        except ImportError as exc:  # yaml is optional
            raise CatalogError(
                f"{path}: reading YAML needs PyYAML (pip install pyyaml); or write the file as TOML"
            ) from exc
        data = yaml.safe_load(text) or {}
    else:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise CatalogError(f"{path}: not valid TOML: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("device"), list):
        raise CatalogError(
            f"{path}: expected a list of devices under 'device' "
            f"(TOML: [[device]] tables; YAML: device: [ ... ]), see catalog.toml's header"
        )
    return data


def read_entries(path: str, *, source: str = "user", text: Optional[str] = None) -> Tuple[Entry, ...]:
    """Entries of the roofs file at ``path`` (TOML, or YAML when PyYAML is installed).

    ``source="datasheet"`` (the packaged catalog) requires a provenance for every number.
    """
    if text is None:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"roofs file {path!r} does not exist")
        with open(path, encoding="utf-8") as f:
            text = f.read()
    data = _parse(path, text)
    rows = _resolve_bases([dict(r) for r in data["device"]], path)
    strict = source == "datasheet"
    entries = []
    for i, row in enumerate(rows):
        where = f"{os.path.basename(path)} device #{i + 1} ({row.get('id', row.get('name'))})"
        entries.append(_row_to_entry(row, source=source, where=where, strict=strict))
    ids = [e.device.id for e in entries]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise CatalogError(f"{path}: duplicate device ids {dupes}")
    return tuple(entries)


@functools.lru_cache(maxsize=1)
def catalog_entries() -> Tuple[Entry, ...]:
    """The packaged catalog's entries, in file order (most specific names first)."""
    text = resources.files("torch_roofline.devices").joinpath("catalog.toml").read_text("utf-8")
    return read_entries("catalog.toml", source="datasheet", text=text)


def catalog_sources() -> Dict[str, str]:
    """The packaged catalog's ``[sources]`` table: key -> citation."""
    text = resources.files("torch_roofline.devices").joinpath("catalog.toml").read_text("utf-8")
    return dict(tomllib.loads(text).get("sources", {}))


def load_file(path: Union[str, os.PathLike]) -> List[Device]:
    """Devices (``source="user"``) from a roofs file in the catalog's format.

    TOML (``[[device]]`` tables) or YAML (``device:`` list; needs PyYAML). Units as in
    ``catalog.toml``: ``matrix``/``vector`` peaks in TFLOP/s, ``memory_bandwidth_gbs`` in
    GB/s. Example file::

        [[device]]
        name = "my-gpu"
        memory_bandwidth_gbs = 1000
        vector = { fp32 = 20 }
        matrix = { bf16 = 200 }

    Raises:
        FileNotFoundError: no such file.
        CatalogError: the file does not follow the format (the message says where).
    """
    return [e.device for e in read_entries(os.fspath(path), source="user")]
