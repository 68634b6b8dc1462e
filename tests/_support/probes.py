"""A base for test probes that sit in the engine's place: a :class:`Sparsifier` with nothing to
save and nothing to report, so a probe writes only its ``step``."""
from __future__ import annotations

from svite_search.engine import Sparsifier


class StatelessProbe(Sparsifier):
    """No state to checkpoint and no statistics; subclasses implement :meth:`step`."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def stats(self) -> dict:
        return {}
