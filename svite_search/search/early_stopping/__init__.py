"""Early stopping of trials for both executors: asynchronous successive halving whose rungs are
judged by a rule of this package (:mod:`.rules`: ``asha`` on top-1, ``pareto`` on every
objective), with the rung records kept in the study storage so a resumed driver decides as the
crashed one would have.

:mod:`.rules` is plain Python (no Optuna, no Ray) and can be used on its own, e.g. to replay
recorded learning curves.
"""
from .rules import (
    KINDS,
    crowding_distances,
    dominates,
    nondominated_fronts,
    pick_promotion,
    promotions,
    quota,
    rung_order,
    rung_epochs,
    rung_verdict,
    runs_unjudged,
    should_continue,
)

__all__ = ["KINDS", "crowding_distances", "dominates", "nondominated_fronts", "pick_promotion", "promotions", "quota", "rung_epochs",
           "rung_order", "rung_verdict", "runs_unjudged", "should_continue"]
