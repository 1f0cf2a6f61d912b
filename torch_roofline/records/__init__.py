"""Frozen records that cross stage boundaries: count -> time -> analyse -> report.

:mod:`~torch_roofline.records.costs`: what the stages produce (costs, timings, modules,
roofs, the device); :mod:`~torch_roofline.records.step`: one step's costs and timings as every
source hands them to the analysis; :mod:`~torch_roofline.records.rows`: the report's rows and
the :class:`Analysis` they make up; :mod:`~torch_roofline.records.dtypes`: the dtype
vocabulary. They import nothing else of the package.

Units everywhere: FLOPs, bytes, seconds, FLOP/s, B/s (plain SI numbers, decimal:
1 TB/s = 1e12 B/s). Scaling happens only when a number is formatted for people.

Conventions shared by every stage:

* ``flops`` counts 2 per multiply-accumulate for matrix work (what hardware peaks
  count); ``macs`` is reported alongside for users of fvcore, ptflops and thop.
* Module names are the fully qualified names of ``model.named_modules()``; the
  root module is ``""``.
* ``phase`` is one of ``"forward"``, ``"backward"``, ``"optimizer"``.
* ``unit`` says which roof an op is measured against: ``"matrix"`` (tensor cores,
  MFMA, AMX) for matmul-like ops, ``"vector"`` for everything else.
"""

from torch_roofline.records import costs as _costs, rows as _rows, step as _step
from torch_roofline.records.costs import *  # noqa: F401,F403 (the names of costs.__all__)
from torch_roofline.records.rows import *  # noqa: F401,F403 (the names of rows.__all__)
from torch_roofline.records.step import *  # noqa: F401,F403 (StepRecords)

__all__ = list(_costs.__all__) + list(_rows.__all__) + list(_step.__all__)
