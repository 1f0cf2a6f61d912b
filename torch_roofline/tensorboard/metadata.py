"""The old home of :mod:`torch_roofline.report.tensorboard_metadata` (moved into the report package); kept so that code
importing this name goes on working. New code imports :mod:`torch_roofline.report.tensorboard_metadata`."""

from torch_roofline.report.tensorboard_metadata import *  # noqa: F401,F403
from torch_roofline.report.tensorboard_metadata import __all__  # noqa: F401
