"""Pure code shared by the edge and the cloud.

Nothing in this package does I/O or reads a clock: text, bytes and objects go in,
objects come out, and ``now`` is always a parameter. An import-linter contract in
``pyproject.toml`` (and ``tests/unit/test_layering.py``) keeps it that way.
"""
