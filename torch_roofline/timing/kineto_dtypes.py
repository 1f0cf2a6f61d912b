"""The dtype names a torch.profiler (Kineto) trace writes: caffe2's TypeMeta names of C++ types
(``"float"``, ``"c10::Half"``, ``"long int"``) in ``Input type``, read back as torch dtypes.

One table for every reader of a trace's types: the replay of recorded calls
(:mod:`~torch_roofline.timing.shapes`) and the message sizes of collectives
(:mod:`~torch_roofline.timing.collectives`). The roofs' own dtype vocabulary (``"fp32"``) is
:mod:`torch_roofline.records.dtypes`.
"""

from __future__ import annotations

from typing import Mapping

import torch

__all__ = ["KINETO_DTYPES"]

#: TypeMeta name -> torch dtype (``"half"`` and ``"bfloat16"``: the names some record_function
#: ranges, such as gloo's collectives, write).
KINETO_DTYPES: Mapping[str, torch.dtype] = {
    "float": torch.float32, "double": torch.float64, "c10::Half": torch.float16,
    "c10::BFloat16": torch.bfloat16, "long int": torch.int64, "long long": torch.int64,
    "__int64": torch.int64, "int": torch.int32, "short int": torch.int16, "short": torch.int16,
    "signed char": torch.int8, "unsigned char": torch.uint8, "bool": torch.bool,
    "c10::complex<float>": torch.complex64, "c10::complex<double>": torch.complex128,
    "c10::complex<c10::Half>": torch.complex32,
    "c10::Float8_e5m2": torch.float8_e5m2, "c10::Float8_e4m3fn": torch.float8_e4m3fn,
    "c10::Float8_e5m2fnuz": torch.float8_e5m2fnuz, "c10::Float8_e4m3fnuz": torch.float8_e4m3fnuz,
    "half": torch.float16, "bfloat16": torch.bfloat16,
}
