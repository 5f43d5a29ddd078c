"""conformance: differential conformance checking of model ports against the official model."""

__version__ = "0.1.0"
