"""Cadenza: a headless networked speaker with peer-assisted streaming."""

__version__ = "0.1.0"
