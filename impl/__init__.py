"""From-scratch NumPy re-implementations of the models conformance checks (no torch inside)."""
