"""The version of gptlib, in one place: the package, its metadata and every checkpoint read it."""

__version__ = "0.1.0"
