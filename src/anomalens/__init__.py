"""anomalens: detect anomalies in images and explain them."""

from anomalens.data.addata import ADData

__version__ = "0.1.0"
__all__ = ["ADData", "__version__"]
