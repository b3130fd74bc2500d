"""A reference identity registry with a face comparison, for development and tests.

A separate program (``signserver ra registry-dev``, ``python -m signserver.registry_dev``) that
plays the government identity registry the RA calls, behind the contract of
docs/registry-contract.md: identities and reference photos from a fixture file, a deterministic
face comparison, an API key, and fault switches to play a registry that is down or slow. The RA
knows only the HTTP contract; it imports nothing from here, and nothing here imports the RA or the
core.
"""

from signserver.registry_dev.server import main

__all__ = ["main"]
