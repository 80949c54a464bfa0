"""Test support shared by every package's tests (needs the ``hypothesis`` dev dependency)."""
