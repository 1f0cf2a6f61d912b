"""TensorBoard integration: write reports (:func:`write_report`) and the Roofline tab.

The tab itself (:class:`~torch_roofline.tensorboard.plugin.RooflinePlugin`) is loaded
by TensorBoard through the ``tensorboard_plugins`` entry point; it is not imported
here, so writing summaries does not import TensorBoard's web server.

Needs the ``tensorboard`` package (``pip install torch_roofline[tensorboard]``).
"""

from torch_roofline.report.tensorboard_metadata import PLUGIN_NAME
from torch_roofline.report.tensorboard import TensorBoardSink, report_json, report_summary_pb, write_report

__all__ = ["PLUGIN_NAME", "TensorBoardSink", "report_json", "report_summary_pb", "write_report"]
