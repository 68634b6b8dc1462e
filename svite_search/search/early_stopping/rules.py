"""The promotion rules of early stopping: pure functions of the values recorded at a rung.

Early stopping here is asynchronous successive halving (ASHA): a trial is judged when it
reaches a *rung* (:func:`rung_epochs`): the first at ``min_epochs``, the next ones
``reduction_factor`` times later each, for as long as the step after them still fits in the
run's ``train.epochs``. It is compared with the trials recorded at the same rung before it (the
*recorded* vectors; a trial is judged once per rung, against whoever got there first) and goes
on only if it ranks in the top ``1 / reduction_factor`` of the rung, itself included. No rule
ranks a rung that holds fewer than ``reduction_factor`` recorded trials (:data:`WARMUP`
explains why).

Two rules rank a rung (:func:`should_continue`):

``asha``
    by the first objective alone (per-epoch top-1): the single-metric rule of Li et al. (2020).
``pareto``
    by non-dominated sorting of every objective at the rung: top-1 so far, and the objectives
    known before training (MACs, parameters, density: exact from the first rung on). The rung's
    trials, the candidate among them, are put in one order: by front (front 0 is the
    non-dominated set, front 1 what is non-dominated once front 0 is removed, ...), and within
    a front by crowding distance (NSGA-II: the two ends of each objective first, then the trials
    with the emptiest neighbourhood), so that survivors spread along the front instead of
    bunching. The candidate goes on if fewer than ``quota`` trials come before it in that
    order. A tie (equal front and crowding distance) goes to the candidate: the recorded trials
    are not competing for its place, they were judged already.

    Being dominated is therefore a reason to stop only in proportion to the rung: a trial
    dominated by ``d`` recorded trials has at least ``d`` trials before it, so it stops as soon
    as ``d`` reaches the quota, and it can go on while the trials ahead of it are fewer than
    the quota (when the rung's first front is thin). An earlier version stopped every
    dominated arrival from the second one on; on recorded learning curves it lost most of the
    final front that way: an early top-1 is noisy (after 10 % of the epochs its rank correlation
    with the final top-1 can be near 0.5), and a single recorded trial that happened to be ahead
    after two epochs stopped settings that would have been on the final front. The same
    warm-up as the quota (``reduction_factor`` recorded trials) now holds for the dominance
    stop too.

Rung placement (:func:`rung_epochs`). Successive halving's survivors of a rung at ``r`` train
on to ``r * η`` before the next judgement; a rung whose next step would not fit in the run is
one the schedule cannot use. Such a late rung saves little (a stop at epoch 18 of 20 saves 2
epochs) while judging trials that already spent most of their run, so the rungs stop at the last
``r`` with ``r * η <= train.epochs`` (Hyperband's top rung is the full run itself). The first
rung, ``min_epochs``, the user's own earliest judgement, is kept whenever it lies below
``train.epochs``; left out, it is the first epoch after the learning-rate warm-up
(:func:`default_min_epochs`).

Trials that run to the end unjudged (:func:`runs_unjudged`). With ``full_run_every: k`` every
``k``-th trial (by the number of its first attempt) is recorded at its rungs but never stopped:
a Hyperband bracket whose only rung is the full run, beside the bracket the rules judge. Two
things make it pay. An early top-1 is a noisy guess of the final one, and a stop is final for a
setting: training is seeded by the spec, so a setting stopped once trains the same curve, reaches
the rung with the same values and is stopped again each time the sampler asks for it, and a
setting of the final front lost to one noisy rung is lost for good. The unjudged trials cannot
lose it, and they give the sampler complete results where the rung would have given none. Their
rung values are recorded like any other, so later arrivals are judged against them too.

The promotion form (``promote: true``; :func:`promotions`). Above, a stop is final: the trial
is judged once, against whoever reached the rung before it, and a setting that arrived early
among strong rivals is lost even if the rung later fills with weaker ones. In the promotion
form of ASHA (Li et al. 2020, Algorithm 2) a trial that does not rank in the top ``n // η`` of
its rung on arrival waits there (its checkpoint kept), and whenever a trial slot frees, the
best waiting trial that now ranks in the top ``n // η`` of its rung (the highest rung first)
resumes from its checkpoint before the sampler is asked for a new setting. No rung promotes
anyone before it holds ``η`` trials: the first arrivals wait instead of passing unjudged. On
recorded learning curves, where half of the final front is dominated at the first rung, this
keeps the settings a final stop would lose (see the search benchmark).

Everything here is plain Python on plain numbers (no Optuna, no Ray), so the same decision is
made by the local executor, the Ray scheduler and an offline replay of recorded learning curves,
and is reproducible from the rung records alone. Non-finite values rank last.

Example::

    rung_epochs(1, 3, 30)                      # [1, 3, 9]: a rung at 27 would have no step after it
    should_continue("pareto", [0.61, 0.9e-3],
                    [[0.70, 0.8e-3], [0.65, 0.85e-3], [0.40, 1.2e-3]], ["maximize", "minimize"], 3)
    # (False, 'pareto: front 3 (2 trials on the fronts before it), place 3 of 4 by front and
    #          crowding distance; the top 1 (1/3) go on')
"""
from __future__ import annotations

import math
from typing import Sequence

KINDS = ("none", "asha", "pareto")
DIRECTIONS = ("maximize", "minimize")

#: A rung ranks nobody until it holds this many recorded trials times ``reduction_factor``
#: (before the candidate), under either rule: the first arrivals have nothing to be compared with, and the top
#: ``1/η`` of fewer than ``η + 1`` trials is at most the best one, so a stop there would judge
#: on one or two noisy early scores. With ``η`` recorded trials the candidate is the
#: ``(η+1)``-th, and the quota is one trial.
WARMUP = 1


def rung_epochs(min_epochs: int, reduction_factor: int, max_epochs: int) -> list[int]:
    """The epochs at which trials are judged: ``min_epochs``, then ``min_epochs * η**k`` for
    ``k = 1, 2, ...`` while ``η`` times the rung still fits in ``max_epochs`` (every rung after
    the first is followed by a full step of training; see the module docstring). Empty when
    ``min_epochs >= max_epochs`` (a trial that reaches ``max_epochs`` is complete, so there is
    no rung there)."""
    if int(min_epochs) < 1:
        raise ValueError(f"min_epochs must be >= 1, got {min_epochs!r}")
    if int(reduction_factor) < 2:
        raise ValueError(f"reduction_factor must be >= 2, got {reduction_factor!r}")
    eta, epoch = int(reduction_factor), int(min_epochs)
    if epoch >= int(max_epochs):
        return []
    rungs = [epoch]
    while epoch * eta * eta <= int(max_epochs):
        epoch *= eta
        rungs.append(epoch)
    return rungs


def default_min_epochs(warmup_epochs: int) -> int:
    """The first rung when ``min_epochs`` is not given: the first epoch after the learning-rate
    warm-up. During the warm-up the learning rate is still ramping, so a trial's top-1 there
    mostly says how far the ramp has got, and a rung in it would rank trials on the schedule
    rather than on their settings. This is a floor, not a guarantee that the next epoch ranks
    well: where the top-1 settles late, set ``min_epochs`` higher."""
    return max(1, int(warmup_epochs) + 1)


def runs_unjudged(lineage: int, full_run_every: int) -> bool:
    """Whether the trial whose first attempt is number ``lineage`` runs to the end unjudged:
    every ``full_run_every``-th trial (numbers ``k - 1``, ``2k - 1``, ...; ``0`` judges every
    trial). A function of the first attempt's number alone, so a trial rerun after a crash and a
    replay of the records agree with the first decision. See the module docstring for why."""
    every = int(full_run_every)
    if every < 0 or every == 1:
        raise ValueError(f"full_run_every must be 0 or >= 2, got {full_run_every!r}")
    return every >= 2 and int(lineage) % every == every - 1


def unjudged_reason(full_run_every: int) -> str:
    """The reason recorded for a trial :func:`runs_unjudged` lets through."""
    return f"unjudged: one trial in every {int(full_run_every)} runs to the end (full_run_every: {int(full_run_every)})"


def rung_verdict(kind: str, lineage: int, candidate: Sequence[float], recorded: Sequence[Sequence[float]],
                 directions: Sequence[str], reduction_factor: int, full_run_every: int,
                 promote: bool = False) -> tuple[bool, str]:
    """The verdict at a rung for the trial whose first attempt is number ``lineage``: it goes on
    unjudged when :func:`runs_unjudged` picks it, else :func:`should_continue` decides. The one
    decision the rung engine, its replay and an offline replay of learning curves all make."""
    if kind != "none" and runs_unjudged(lineage, full_run_every):
        return True, unjudged_reason(full_run_every)
    return should_continue(kind, candidate, recorded, directions, reduction_factor, promote=promote)


def quota(n: int, reduction_factor: int) -> int:
    """How many of ``n`` trials at a rung go on: the top ``n // η``, at least one."""
    return max(1, int(n) // int(reduction_factor))


def _oriented(vector: Sequence[float], directions: Sequence[str]) -> tuple[float, ...]:
    """The vector as values to maximise (minimised objectives negated; non-finite: worst)."""
    out = []
    for value, direction in zip(vector, directions):
        value = float(value) if value is not None else math.nan
        if not math.isfinite(value):
            out.append(-math.inf)
        else:
            out.append(value if direction == "maximize" else -value)
    return tuple(out)


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """``a`` dominates ``b`` (both oriented to maximise): no worse anywhere, better somewhere."""
    return all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))


def nondominated_fronts(points: Sequence[Sequence[float]], directions: Sequence[str]) -> list[list[int]]:
    """Indices of ``points`` by front (Deb's fast non-dominated sort): front 0 is the
    non-dominated set, front 1 what is non-dominated once front 0 is removed, and so on.
    Indices within a front are in input order."""
    oriented = [_oriented(p, directions) for p in points]
    n = len(oriented)
    dominated_by = [0] * n
    dominating: list[list[int]] = [[] for _ in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            if dominates(oriented[i], oriented[j]):
                dominating[i].append(j)
                dominated_by[j] += 1
            elif dominates(oriented[j], oriented[i]):
                dominating[j].append(i)
                dominated_by[i] += 1
    fronts, current = [], [i for i in range(n) if dominated_by[i] == 0]
    while current:
        fronts.append(current)
        following = []
        for i in current:
            for j in dominating[i]:
                dominated_by[j] -= 1
                if dominated_by[j] == 0:
                    following.append(j)
        current = sorted(following)
    return fronts


def crowding_distances(points: Sequence[Sequence[float]], directions: Sequence[str]) -> list[float]:
    """NSGA-II crowding distance of each point of one front: per objective, the gap between
    its two neighbours divided by the front's range, summed; the ends of each objective get
    infinity (they bound the front). An objective with no range adds nothing."""
    oriented = [_oriented(p, directions) for p in points]
    n = len(oriented)
    distance = [0.0] * n
    if n <= 2:
        return [math.inf] * n
    for m in range(len(directions)):
        order = sorted(range(n), key=lambda i: (oriented[i][m], i))
        low, high = oriented[order[0]][m], oriented[order[-1]][m]
        distance[order[0]] = distance[order[-1]] = math.inf
        span = high - low
        if not math.isfinite(span) or span <= 0:
            continue
        for k in range(1, n - 1):
            gap = oriented[order[k + 1]][m] - oriented[order[k - 1]][m]
            distance[order[k]] += gap / span if math.isfinite(gap) else math.inf
    return distance


def _trials(count: int) -> str:
    return f"{count} trial" if count == 1 else f"{count} trials"


def _check(kind: str, candidate: Sequence[float], recorded: Sequence[Sequence[float]],
           directions: Sequence[str], reduction_factor: int) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r} is not one of {', '.join(KINDS)}")
    if int(reduction_factor) < 2:
        raise ValueError(f"reduction_factor must be >= 2, got {reduction_factor!r}")
    if not directions or any(d not in DIRECTIONS for d in directions):
        raise ValueError(f"directions must each be 'maximize' or 'minimize', got {list(directions)!r}")
    for vector in (candidate, *recorded):
        if len(vector) != len(directions):
            raise ValueError(f"a vector of {len(vector)} values for {len(directions)} objectives")


def should_continue(
    kind: str,
    candidate: Sequence[float],
    recorded: Sequence[Sequence[float]],
    directions: Sequence[str],
    reduction_factor: int,
    *,
    promote: bool = False,
) -> tuple[bool, str]:
    """Whether a trial that has just reached a rung goes on, and why (the rule's verdict).

    ``candidate`` is the trial's objective vector at the rung (top-1 so far, then the objectives
    known before training), ``recorded`` the vectors of the trials recorded at this rung before
    it (the candidate not among them), ``directions`` ``"maximize"``/``"minimize"`` per
    objective. ``asha`` looks at the first objective only; ``pareto`` at all of them (see the
    module docstring); ``none`` always goes on. The decision depends on these values alone.

    ``promote``: the promotion form (see the module docstring): no warm-up, and the top
    ``n // η`` of :func:`rung_order` go on (none while the rung holds fewer than ``η`` trials; a
    tie goes to the trial that arrived first, as when :func:`promotions` picks); a trial that
    does not waits at the rung, where :func:`promotions` may pick it later.
    """
    _check(kind, candidate, recorded, directions, reduction_factor)
    eta = int(reduction_factor)
    if kind == "none":
        return True, "none: no early stopping"
    if not math.isfinite(_oriented(candidate[:1], directions[:1])[0]):
        return False, f"{kind}: the first objective is {candidate[0]!r}, not a finite number"
    needed = 0 if promote else WARMUP * eta
    n = len(recorded) + 1
    keep = n // eta if promote else quota(n, eta)
    if len(recorded) < needed:
        return True, f"{kind}: {_trials(len(recorded))} recorded at this rung, it ranks none before {needed}"
    ahead, where = _place(kind, candidate, recorded, directions)
    if promote:  # the order promotions pick in: a tie goes to the trial that arrived first
        ahead = rung_order(kind, [*recorded, candidate], directions).index(n - 1)
    verdict = ahead < keep
    if kind == "asha":
        text = f"asha: ranks {ahead + 1} of {n} by the first objective; the top {keep} (1/{eta}) go on"
    else:
        text = (f"pareto: {where}, place {ahead + 1} of {n} by front and crowding distance; the top "
                f"{keep} (1/{eta}) go on")
    if promote and not verdict:
        text += "; it waits at the rung, to resume if it ranks among them later"
    return verdict, text


def _place(kind: str, candidate: Sequence[float], recorded: Sequence[Sequence[float]],
           directions: Sequence[str]) -> tuple[int, str]:
    """How many of ``recorded`` come before ``candidate`` in the rung's order (a tie goes to the
    candidate: the recorded trials are not competing for its place, they were judged already),
    and, for ``pareto``, where it lies."""
    if kind == "asha":
        mine = _oriented(candidate[:1], directions[:1])[0]
        return sum(1 for r in recorded if _oriented(r[:1], directions[:1])[0] > mine), ""
    points = [*recorded, candidate]
    n = len(points)
    fronts = nondominated_fronts(points, directions)
    level = next(k for k, members in enumerate(fronts) if n - 1 in members)
    front = fronts[level]
    crowd = dict(zip(front, crowding_distances([points[i] for i in front], directions)))
    before = sum(len(members) for members in fronts[:level])
    ahead = before + sum(1 for i in front if crowd[i] > crowd[n - 1])
    where = "non-dominated" if level == 0 else f"front {level + 1} ({_trials(before)} on the fronts before it)"
    return ahead, where


def rung_order(kind: str, points: Sequence[Sequence[float]], directions: Sequence[str]) -> list[int]:
    """Indices of a rung's ``points``, best first: ``asha`` by the first objective, ``pareto`` by
    front and then crowding distance (the order :func:`should_continue` places a candidate in);
    ties go to the earlier point (the trial that reached the rung first)."""
    if kind == "asha":
        return sorted(range(len(points)), key=lambda i: (-_oriented(points[i][:1], directions[:1])[0], i))
    order: list[int] = []
    for front in nondominated_fronts(points, directions):
        crowd = crowding_distances([points[i] for i in front], directions)
        order += [i for _, i in sorted(zip(crowd, front), key=lambda ci: (-ci[0], ci[1]))]
    return order


def promotions(kind: str, points: Sequence[Sequence[float]], waiting: Sequence[bool], directions: Sequence[str],
               reduction_factor: int, *, past_quota: bool = False) -> list[int]:
    """The promotion form's pick at one rung: of the rung's ``points`` (every trial recorded
    there, in the order they arrived), the indices of those ``waiting`` at the rung that now rank
    in its top ``n // η`` (:func:`rung_order`), best first. A trial that went on, or was promoted
    already, keeps its place in the top and is not picked again.

    ``past_quota``: every waiting trial, best first, wherever it ranks. A search whose sampler
    is spent (it asks only for settings trained already) has no new trial to fill a rung with,
    so the quota can no longer grow; the waiting trials are then the only candidates left, and
    the best of them go on rather than leave the budget unspent."""
    if len(points) != len(waiting):
        raise ValueError(f"{len(points)} points and {len(waiting)} waiting flags")
    if kind == "none" or not points:
        return []
    order = rung_order(kind, points, directions)
    top = order if past_quota else order[: len(points) // int(reduction_factor)]
    return [i for i in top if waiting[i]]


def pick_promotion(kind: str, rungs: Sequence[tuple[int, Sequence[Sequence[float]], Sequence[bool]]],
                   directions: Sequence[str], reduction_factor: int, *,
                   past_quota: bool = False) -> tuple[int, int, bool] | None:
    """The next promotion over a study's rungs: ``rungs`` as ``(epoch, points, waiting)``, the
    highest first (see :func:`promotions`). Returns ``(epoch, index, past)``: the rung, the
    index of the waiting trial in its points, and whether it ranks past the quota; None when
    nobody can go on. A pick inside a quota, at any rung, comes before one past it
    (``past_quota``: the sampler is spent)."""
    for past in (False, True) if past_quota else (False,):
        for epoch, points, waiting in rungs:
            picks = promotions(kind, points, waiting, directions, reduction_factor, past_quota=past)
            if picks:
                return epoch, picks[0], past
    return None
