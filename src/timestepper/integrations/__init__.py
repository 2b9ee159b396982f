"""Interop with other libraries (imported lazily; the peers are optional dependencies)."""
