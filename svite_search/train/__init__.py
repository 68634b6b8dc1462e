"""One training run (the code path of ``svite-search train`` and of every search trial)."""
from .trainer import NonFiniteLossError, Trainer, run_training

__all__ = ["Trainer", "run_training", "NonFiniteLossError"]
