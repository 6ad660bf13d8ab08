"""Docnum: unique, formatted, sequential document numbers as a service."""

__version__ = "0.1.0"
