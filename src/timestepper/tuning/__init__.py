"""Tuning the sampler to the model (issue 15): search a solver schedule for a given NFE.

:mod:`~timestepper.tuning.methods` is the registry of search methods; the method modules
register themselves at import.
"""

from .methods import available_methods, get_method, register_method

__all__ = ["available_methods", "get_method", "register_method"]
