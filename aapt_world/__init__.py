"""aapt-world: a Gymnasium-compatible neural world simulator trained with AAPT."""

__version__ = "0.1.0"
