"""Tests of pipelines.data.phantoms modules (the classic factories are tested in tests/data/test_phantoms.py)."""
