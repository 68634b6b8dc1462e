"""Two drivers of one study racing for its last place: the second claims while the first has
counted the study and is about to ask (shared by the sqlite and the PostgreSQL tests)."""
from __future__ import annotations

import threading
from typing import Any

from svite_search.search.study import ClaimLock, claim_trial


def race_at_ask(asking: Any, other: Any, n_trials: int) -> tuple[list[Any], threading.Event]:
    """Let ``other`` claim a trial while ``asking`` has counted the study and is about to ask:
    the moment two drivers that count together both see a free place. Returns what ``other``
    claimed (once it has claimed, or once it waits for the lock) and whether it waited."""
    waited, settled = threading.Event(), threading.Event()
    got: list[Any] = []
    other_lock = ClaimLock(other.url, other.study.study_name, on_wait=lambda: (waited.set(), settled.set()))

    def other_claims() -> None:
        try:
            got.append(claim_trial(other.study, other.storage, n_trials, other_lock))
        finally:
            settled.set()

    real_ask = asking.study.ask
    thread = threading.Thread(target=other_claims)

    def ask_after_the_other_driver(*args: Any, **kwargs: Any) -> Any:
        thread.start()
        assert settled.wait(60), "the other driver neither claimed nor waited"
        return real_ask(*args, **kwargs)

    asking.study.ask = ask_after_the_other_driver  # this test's own study object
    mine = claim_trial(asking.study, asking.storage, n_trials, ClaimLock(asking.url, asking.study.study_name))
    thread.join(60)
    return [mine, *got], waited
