"""The old home of :mod:`torch_roofline.report.plot` (moved into the report package); kept so that code
importing this name goes on working. New code imports :mod:`torch_roofline.report.plot`."""

from torch_roofline.report.plot import *  # noqa: F401,F403
from torch_roofline.report.plot import __all__  # noqa: F401
