"""The ``signserver`` command line."""
