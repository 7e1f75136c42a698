"""Simulated carriers: the synthetic data generator and an in-process federation harness.

The harness is part of the product: operators and engineers use it to try the federation with
simulated carriers (``oversight demo``) and integration tests use the same code.
"""
