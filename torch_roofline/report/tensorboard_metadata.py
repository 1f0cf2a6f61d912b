"""Names shared by the writer (:mod:`torch_roofline.report.tensorboard`) and the Roofline tab
(:mod:`torch_roofline.tensorboard.plugin`).

One constant names the plugin in both places: the writer tags each report summary
with it and TensorBoard routes that data to :class:`RooflinePlugin` by it.
"""

from __future__ import annotations

import json

from tensorboard.compat.proto import summary_pb2

__all__ = ["PLUGIN_NAME", "PAYLOAD_VERSION", "MAX_STEP", "create_summary_metadata"]

PLUGIN_NAME = "roofline"

#: Steps are TensorBoard's int64 event steps: the writer accepts 0..MAX_STEP and the tab
#: serves exactly those (a negative step could be stored but never asked for).
MAX_STEP = 2**63 - 1

# Version of the plugin-content blob below (not of the report schema, which the
# payload carries itself in its "schema" field).
PAYLOAD_VERSION = 1


def create_summary_metadata(description: str = "") -> summary_pb2.SummaryMetadata:
    """Summary metadata marking a value as one roofline report of our plugin.

    ``data_class`` must be ``DATA_CLASS_TENSOR``: without it TensorBoard's data
    provider does not hand the value to any plugin.
    """
    content = json.dumps({"version": PAYLOAD_VERSION}, sort_keys=True).encode("utf-8")
    return summary_pb2.SummaryMetadata(
        summary_description=description,
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name=PLUGIN_NAME, content=content),
        data_class=summary_pb2.DATA_CLASS_TENSOR,
    )
