"""The package's version (a leaf: any module may read it without importing the package's names)."""

__version__ = "0.1.0"
