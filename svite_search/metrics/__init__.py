"""Measurements: analytic FLOPs (multiply-accumulates) and wall-clock latency.

The lowest layer of the package: it imports torch (and timm, to build a model by name) but
nothing else of the package except :mod:`svite_search.errors`, so every layer above may use it.
"""
