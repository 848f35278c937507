"""Rempart: a tiers-payant platform for French complementary health insurance."""

__version__ = "0.1.0"
