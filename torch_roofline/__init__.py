"""torch_roofline: how close each module of a PyTorch model runs to the hardware's roofs."""

from torch_roofline._version import __version__

__all__ = ["__version__"]
