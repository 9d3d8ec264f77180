"""Measurements on this machine (nothing in the library imports this package)."""
