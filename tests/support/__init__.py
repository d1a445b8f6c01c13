"""Helpers for the test suite (no fixtures: those live in tests/conftest.py)."""
