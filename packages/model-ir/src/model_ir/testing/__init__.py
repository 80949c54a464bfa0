"""Test support shared by every package's tests (``strategies`` needs Hypothesis: the
``model-ir[testing]`` extra)."""
