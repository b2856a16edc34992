"""cvrepro: a DVC pipeline template for reproducible computer-vision datasets and models."""

__version__ = "0.1.0"
