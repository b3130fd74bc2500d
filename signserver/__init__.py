"""signserver: an HSM-backed remote signing server."""

__version__ = "0.1.0"
