"""The old home of :mod:`torch_roofline.report.scalars` (moved into the report package); kept so that code
importing this name goes on working. New code imports :mod:`torch_roofline.report.scalars`."""

from torch_roofline.report.scalars import *  # noqa: F401,F403
from torch_roofline.report.scalars import __all__  # noqa: F401
