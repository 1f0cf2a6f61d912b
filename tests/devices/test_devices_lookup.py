"""Finding catalog rows by id, marketing name and torch.cuda.get_device_name() strings."""

import pytest

from torch_roofline.devices import UnknownDeviceError, get

# Exact strings torch.cuda.get_device_name() returns, as recorded in
# shared/reference/devices.yaml (torch_names_seen; nvidia-smi / log probes).
TORCH_NAMES = {
    "Tesla V100-SXM2-16GB": "v100-sxm2-16gb",
    "Tesla V100-PCIE-32GB": "v100-pcie-32gb",
    "Tesla T4": "t4",
    "NVIDIA A100-SXM4-80GB": "a100-sxm4-80gb",
    "NVIDIA A100 80GB PCIe": "a100-pcie-80gb",
    "NVIDIA A100-SXM4-40GB": "a100-sxm4-40gb",
    "NVIDIA A100-PCIE-40GB": "a100-pcie-40gb",
    "NVIDIA A10": "a10",
    "NVIDIA A10G": "a10g",
    "NVIDIA L40S": "l40s",
    "NVIDIA L4": "l4",
    "NVIDIA GeForce RTX 4090": "rtx-4090",
    "NVIDIA H100 NVL": "h100-nvl",
    "NVIDIA H100 PCIe": "h100-pcie",
    "NVIDIA H100 80GB HBM3": "h100-sxm",
    "NVIDIA H200": "h200",
    "NVIDIA B200": "b200",
    "AMD Instinct MI300X": "mi300x",
    "AMD Instinct MI250X / MI250": "mi250x",
    "AMD Instinct MI250X": "mi250x",
}


@pytest.mark.parametrize("name,expected", sorted(TORCH_NAMES.items()))
def test_torch_names_resolve(name, expected):
    assert get(name).id == expected


@pytest.mark.parametrize("name,expected", [
    # confusable pairs: the shorter name is a prefix/substring of the longer
    ("NVIDIA L40S", "l40s"), ("NVIDIA L4", "l4"), ("NVIDIA L40", "l40"),
    ("NVIDIA A100-SXM4-40GB", "a100-sxm4-40gb"), ("NVIDIA A10", "a10"),
    ("NVIDIA H100 NVL", "h100-nvl"), ("NVIDIA H100 80GB HBM3", "h100-sxm"),
    ("Tesla V100S-PCIE-32GB", "v100s-pcie"), ("Tesla V100-PCIE-16GB", "v100-pcie-16gb"),
    ("NVIDIA H200 NVL", "h200-nvl"), ("NVIDIA H200", "h200"),
    ("NVIDIA GeForce RTX 3090 Ti", None),  # a 3090 Ti is not a 3090
])
def test_confusable_pairs(name, expected):
    if expected is None:
        with pytest.raises(UnknownDeviceError):
            get(name)
    else:
        assert get(name).id == expected


def test_mi250_disambiguated_by_cu_count():
    # ROCm: MI250X has 110 CUs per GCD, MI250 104; both report "AMD Instinct MI250X / MI250"
    assert get("AMD Instinct MI250X / MI250", multi_processor_count=110).id == "mi250x"
    assert get("AMD Instinct MI250X / MI250", multi_processor_count=104).id == "mi250"


def test_ids_and_marketing_names():
    assert get("h100-sxm").name == "NVIDIA H100 SXM5 80GB"
    assert get("H100 SXM").id == "h100-sxm"
    assert get("GeForce GTX 1080 Ti").id == "gtx-1080-ti"
    assert get("RTX 4090").id == "rtx-4090"
    assert get("MI300X").id == "mi300x"
    assert get("NVIDIA A100-SXM4-40GB MIG 1g.5gb").id == "a100-sxm4-40gb"


def test_unknown_name_lists_close_matches():
    with pytest.raises(UnknownDeviceError, match=r"unknown device 'H100 SMX'.*h100-sxm"):
        get("H100 SMX")
    with pytest.raises(KeyError):
        get("Voodoo 2")
    # an ambiguous family name is not silently one of its members
    with pytest.raises(ValueError, match=r"a100-sxm4-80gb.*a100-pcie-40gb"):
        get("A100")
