"""Command-line entry points: ``cadenza`` and ``cadenzad``."""
