"""Measurements: analytic FLOPs (multiply-accumulates) and wall-clock latency."""
