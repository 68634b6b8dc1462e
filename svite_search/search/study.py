"""The persistent Optuna study of a study directory: storage, samplers, resume bookkeeping.

Layout of a study directory ``DIR``::

    DIR/optuna.db        the Optuna storage (sqlite), unless search.storage, SVITE_STORAGE_URL or
                         OPTUNA_STORAGE names a database URL (a study shared across machines)
    DIR/spec.yaml        the spec the study was created with, and its hash
    DIR/study.json       study name, objectives and where the storage is (for the report)
    DIR/trials/<number>/ each trial's run directory (config.yaml, last.pt, result.json)

Resume rules. Running the same command again continues the study until ``n_trials`` trials
have finished (COMPLETE or PRUNED; failed trials do not count and are replaced). A trial left
RUNNING by a driver that died (killed, crashed, machine lost) is marked FAIL with the reason
and its parameters are queued again: on this host when its driver process is gone, elsewhere
when its heartbeat is older than the grace period; either way with the reason ``interrupted``,
and its rerun comes before every other queued point and continues from its checkpoint. A study
directory created from a different spec is refused unless ``force``.

Counting. Every driver counts the trials of the shared storage, never only its own: several
drivers (two commands on one directory, or machines sharing a database) reach ``n_trials``
finished trials together, and none overshoots it (:func:`claim_is_surplus`).

Example::

    handle = prepare_study(spec, Path("runs/quickstart"))
    handle.study.best_trials
"""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
import warnings
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterable

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

from .._redact import is_masked, mask_credentials, mask_url
from .._study_dir import check_study_files, read_spec_copy, read_study_json, readonly_storage_url
from ..errors import UserInputError
from .objective import COMPLETE, FAIL, PRUNED, TrialOutcome
from .space import initial_queue
from .spec import StudySpec, spec_from_dict
from .._io import atomic_write_text  # not via ..train: reading a study needs no torch

log = logging.getLogger(__name__)

DB_FILE, SPEC_FILE, STUDY_FILE = "optuna.db", "spec.yaml", "study.json"
STORAGE_ENV = ("SVITE_STORAGE_URL", "OPTUNA_STORAGE")
HEARTBEAT_S, GRACE_S = 30, 120
#: user attributes the harness writes on trials
DRIVER_ATTR, REASON_ATTR, RETRY_ATTR, SOURCE_ATTR = "driver", "fail_reason", "retry_of", "source"
#: study directory -> the storage URL this process opened it with (its password is never written down,
#: so the report a search writes at its end finds it here)
_OPENED_URLS: dict[str, str] = {}
INTERRUPTED = "interrupted: its search process ended before the trial did (rerun queued)"


def driver_id() -> str:
    """``host:pid`` of this process, recorded on every trial it runs."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def driver_gone(driver: str | None) -> bool:
    """True when ``driver`` ran on this host and its process no longer exists."""
    if not driver or ":" not in driver:
        return True
    host, _, pid = driver.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False  # another machine's driver: only its heartbeat can tell
    return int(pid) != os.getpid() and not _pid_alive(int(pid))


# ----------------------------------------------------------------------------- storage


def storage_url(spec: StudySpec, study_dir: Path) -> tuple[str, str]:
    """The storage URL and where it came from: ``spec``, ``env:NAME`` or ``study_dir``."""
    if spec.search.storage:
        return spec.search.storage, "spec"
    for name in STORAGE_ENV:
        if os.environ.get(name):
            return os.environ[name], f"env:{name}"
    return f"sqlite:///{(study_dir / DB_FILE).resolve()}", "study_dir"


def _masked(url: str) -> str:
    return mask_url(url)


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """An RDB storage with heartbeats (so a trial of a lost machine can be failed and rerun);
    sqlite waits for a lock instead of failing at once."""
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        engine_kwargs = {"connect_args": {"timeout": 60}}
    for attempt in range(SCHEMA_ATTEMPTS):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    url,
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=HEARTBEAT_S,
                    grace_period=GRACE_S,
                    heartbeat_stale_trial_callback=requeue,
                )
        except Exception as err:
            # Two drivers opening a new database at once both create its schema; the loser
            # of that race ("already exists") finds the schema complete on its next attempt.
            if attempt + 1 < SCHEMA_ATTEMPTS and _schema_race(err):
                log.debug("storage schema created by another driver meanwhile (%s); opening again", err)
                continue
            first = (str(err).strip().splitlines() or [""])[0]
            raise UserInputError(mask_url(f"search.storage: cannot open {url}: {type(err).__name__}: {first}")) from None
    raise AssertionError("unreachable")  # pragma: no cover


SCHEMA_ATTEMPTS = 5


def _schema_race(err: BaseException) -> bool:
    text = str(err).lower()
    return "already exists" in text or "duplicate" in text


# ----------------------------------------------------------------------------- samplers


class TrialSeededSampler(optuna.samplers.BaseSampler):
    """Wraps an Optuna sampler so every trial draws from a seed of its own: the study seed and the
    trial number.

    Why: a sampler seeded once draws the same sequence in every process that builds it. A resumed
    study would draw its first parameter sets again, and two drivers working on one study (a
    shared database, or two ``search`` commands on one directory) would draw the same values at
    the same time. Seeding by trial number keeps a single driver exactly reproducible and gives
    concurrent drivers, whose trials have different numbers, different draws.
    """

    def __init__(self, inner: optuna.samplers.BaseSampler, seed: int | None) -> None:
        self.inner = inner
        self.seed = seed

    def before_trial(self, study: optuna.Study, trial: Any) -> None:
        if self.seed is not None:
            _reseed(self.inner, (int(self.seed) * 1_000_003 + int(trial.number)) % 2**32)
        self.inner.before_trial(study, trial)

    def infer_relative_search_space(self, study: optuna.Study, trial: Any) -> dict[str, Any]:
        return self.inner.infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: Any, search_space: dict[str, Any]) -> dict[str, Any]:
        return self.inner.sample_relative(study, trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: Any, param_name: str, param_distribution: Any) -> Any:
        return self.inner.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: optuna.Study, trial: Any, state: Any, values: Any) -> None:
        self.inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.inner.reseed_rng()


def _reseed(sampler: optuna.samplers.BaseSampler, seed: int) -> None:
    """Seed a sampler's random state and that of the samplers it holds (TPE's random start-up
    sampler, GP's independent sampler)."""
    state = getattr(sampler, "_rng", None)
    if state is not None and hasattr(state, "rng"):
        state.rng.seed(seed)
    for value in vars(sampler).values():
        if isinstance(value, optuna.samplers.BaseSampler) and value is not sampler:
            _reseed(value, (seed + 1) % 2**32)


def make_sampler(spec: StudySpec, *, parallel: bool = False) -> optuna.samplers.BaseSampler:
    """The spec's sampler, seeded per trial (see :class:`TrialSeededSampler`). ``grid`` runs the
    enqueued grid (see :func:`svite_search.search.space.grid_points`); its sampler only fills in
    values a grid point leaves open, which there are none of."""
    inner = _make_inner_sampler(spec, parallel=parallel)
    return TrialSeededSampler(inner, spec.search.seed)


def _make_inner_sampler(spec: StudySpec, *, parallel: bool) -> optuna.samplers.BaseSampler:
    search = spec.search
    seed = None if search.seed is None else int(search.seed)
    n = spec.n_trials
    startup = search.n_startup_trials if search.n_startup_trials is not None else min(10, max(2, n // 3))
    population = search.population_size or max(2, min(50, n))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.simplefilter("ignore", FutureWarning)
        if search.sampler == "tpe":
            return optuna.samplers.TPESampler(
                seed=seed, n_startup_trials=startup, multivariate=True, group=True, constant_liar=parallel
            )
        if search.sampler == "nsga2":
            return optuna.samplers.NSGAIISampler(seed=seed, population_size=population)
        if search.sampler == "nsga3":
            return optuna.samplers.NSGAIIISampler(seed=seed, population_size=population)
        if search.sampler == "gp":
            return optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup)
        return optuna.samplers.RandomSampler(seed=seed)


def make_pruner(spec: StudySpec) -> optuna.pruners.BasePruner:
    """No Optuna pruner: early stopping (``search.early_stopping``) is decided by the driver's
    rung engine for both executors (Optuna's pruners cannot judge a multi-objective study)."""
    return optuna.pruners.NopPruner()


# ----------------------------------------------------------------------------- study directory


@dataclass
class StudyHandle:
    """An opened study: the Optuna study, its storage and what resuming it found."""

    spec: StudySpec
    study_dir: Path
    study: optuna.Study
    storage: optuna.storages.RDBStorage
    url: str
    resumed: bool = False
    recovered: list[int] = field(default_factory=list)


def _read_spec_file(study_dir: Path) -> dict[str, Any] | None:
    path = study_dir / SPEC_FILE
    if not path.is_file():
        return None
    return read_spec_copy(study_dir)


def _write_study_files(handle: StudyHandle, source: str) -> None:
    spec, study_dir = handle.spec, handle.study_dir
    study_dir.mkdir(parents=True, exist_ok=True)
    header = "# The study spec this directory was created with (svite-search search); spec_hash names it.\n"
    body = yaml.safe_dump({"spec_hash": spec.spec_hash, "spec": mask_credentials(spec.raw)}, sort_keys=False)
    atomic_write_text(study_dir / SPEC_FILE, header + body)
    storage = {"url": f"sqlite:///{DB_FILE}", "relative": True} if source == "study_dir" else {"url": _masked(handle.url), "source": source}
    info = {
        "study_name": spec.name,
        "spec_hash": spec.spec_hash,
        "objectives": [o.to_dict() for o in spec.objectives],
        "constraints": [c.name for c in spec.constraints],
        "n_trials": spec.n_trials,
        "storage": storage,
    }
    atomic_write_text(study_dir / STUDY_FILE, json.dumps(info, indent=2) + "\n")


def _check_same_study(spec: StudySpec, study_dir: Path, existing: optuna.Study | None, force: bool) -> None:
    saved = _read_spec_file(study_dir)
    theirs = (saved or {}).get("spec_hash")
    if theirs is None and existing is not None:
        theirs = existing.user_attrs.get("spec_hash")
    if theirs is not None and theirs != spec.spec_hash and not force:
        raise UserInputError(
            f"{study_dir}: holds study {spec.name!r} created from a different spec "
            f"(spec hash {theirs} here, {spec.spec_hash} now); pass --force to continue it with this "
            "spec, or choose another --out"
        )
    if existing is not None:
        theirs_dirs = [d.name.lower() for d in existing.directions]
        if theirs_dirs != spec.directions:
            raise UserInputError(
                f"{study_dir}: study {spec.name!r} optimises {theirs_dirs}, the spec {spec.directions}; "
                "objectives cannot change in a study: choose another --out"
            )


def prepare_study(spec: StudySpec, study_dir: str | Path, *, force: bool = False, parallel: bool = False) -> StudyHandle:
    """Create or resume the study of ``study_dir`` (see the module docstring)."""
    study_dir = Path(study_dir)
    if study_dir.exists() and not study_dir.is_dir():
        raise UserInputError(f"{study_dir}: exists and is not a directory")
    try:
        study_dir.mkdir(parents=True, exist_ok=True)
        probe = study_dir / ".writable"
        probe.touch()
        probe.unlink()
    except OSError as err:
        raise UserInputError(f"{study_dir}: cannot be used as the study directory ({err.strerror or err})") from None
    check_study_files(study_dir)  # a damaged study.json, spec.yaml or store: refused before any is opened
    url, source = storage_url(spec, study_dir)
    storage = open_storage(url)
    _OPENED_URLS[os.path.realpath(study_dir)] = url
    try:
        existing = optuna.load_study(study_name=spec.name, storage=storage)
    except KeyError:
        existing = None
    _check_same_study(spec, study_dir, existing, force)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study = optuna.create_study(
            study_name=spec.name,
            storage=storage,
            directions=spec.directions,
            sampler=make_sampler(spec, parallel=parallel),
            pruner=make_pruner(spec),
            load_if_exists=True,
        )
        if existing is None:
            study.set_metric_names(spec.metrics)
    study.set_user_attr("spec_hash", spec.spec_hash)
    handle = StudyHandle(spec, study_dir, study, storage, url, resumed=existing is not None)
    if not study.user_attrs.get("queued"):
        for params in initial_queue(spec):
            study.enqueue_trial(params, user_attrs={SOURCE_ATTR: "grid" if spec.search.sampler == "grid" else "enqueue"},
                                skip_if_exists=True)
        study.set_user_attr("queued", True)
    retries_first(study)
    handle.recovered = recover_interrupted(study)
    _write_study_files(handle, source)
    return handle


# ----------------------------------------------------------------------------- resume bookkeeping


def retries_first(study: optuna.Study) -> optuna.Study:
    """Make ``study.ask()`` take the reruns of interrupted trials before any other queued point
    (grid points, enqueued baselines), oldest first; the claim itself stays Optuna's atomic
    WAITING -> RUNNING transition, so two drivers never take the same point."""
    storage, study_id = study._storage, study._study_id

    def pop_waiting_trial_id() -> int | None:
        waiting = storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.WAITING,))
        for trial in sorted(waiting, key=lambda t: (RETRY_ATTR not in t.user_attrs, t.number)):
            try:
                if storage.set_trial_state_values(trial._trial_id, state=TrialState.RUNNING):
                    return trial._trial_id
            except optuna.exceptions.UpdateFinishedTrialError:
                continue
        return None

    study._pop_waiting_trial_id = pop_waiting_trial_id  # type: ignore[method-assign]
    return study


def queue_again(study: optuna.Study, number: int, params: dict[str, Any]) -> None:
    """Queue an interrupted trial's parameters again, remembering which trial it reruns."""
    if params:
        study.enqueue_trial(dict(params), user_attrs={RETRY_ATTR: number, SOURCE_ATTR: "retry"})


def requeue(study: optuna.Study, trial: FrozenTrial) -> None:
    """The storage's stale-trial callback: rerun a trial whose heartbeat stopped."""
    queue_again(study, trial.number, dict(trial.params))


def _stale_trial_ids(study: optuna.Study) -> list[int]:
    """Trials whose heartbeat is older than the grace period (another machine's lost trials)."""
    from optuna.storages._heartbeat import is_heartbeat_enabled

    storage = study._storage
    find = getattr(storage, "_get_stale_trial_ids", None)  # what optuna.storages.fail_stale_trials uses
    if find is None or not is_heartbeat_enabled(storage):
        return []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return list(find(study._study_id))


def recover_interrupted(study: optuna.Study) -> list[int]:
    """Fail with the reason ``interrupted`` and requeue the trials whose driver is gone (its
    process ended on this host, or its heartbeat stopped longer than the grace period ago);
    returns their numbers. The reason is set before the trial is failed: a finished trial's
    attributes can no longer change."""
    storage = study._storage  # the study's own (cached) storage keeps its view consistent
    stale = set(_stale_trial_ids(study))
    recovered = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if trial._trial_id not in stale and not driver_gone(trial.user_attrs.get(DRIVER_ATTR)):
            continue
        if trial.user_attrs.get(DRIVER_ATTR) is None and trial._trial_id not in stale and _young(trial):
            continue  # asked a moment ago by a driver that has not signed it yet
        try:
            storage.set_trial_user_attr(trial._trial_id, REASON_ATTR, INTERRUPTED)
            storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # finished meanwhile by its (live) driver
        queue_again(study, trial.number, dict(trial.params))
        recovered.append(trial.number)
    if recovered:
        log.warning("trials %s were interrupted: marked failed and queued again", recovered)
    return recovered


def _young(trial: FrozenTrial) -> bool:
    start = trial.datetime_start
    return start is not None and (datetime.now() - start).total_seconds() < GRACE_S


def live_running(study: optuna.Study, trials: Iterable[FrozenTrial] | None = None) -> list[FrozenTrial]:
    """RUNNING trials a live driver may still finish: its process is alive (this host), it runs
    elsewhere (its heartbeat decides), or it was asked a moment ago and is not signed yet."""
    if trials is None:
        trials = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    live = []
    for t in trials:
        if t.state != TrialState.RUNNING:
            continue
        driver = t.user_attrs.get(DRIVER_ATTR)
        if (driver is None and _young(t)) or (driver is not None and not driver_gone(driver)):
            live.append(t)
    return live


def claim_is_surplus(study: optuna.Study, trial_id: int, n_trials: int) -> bool:
    """True when the trial just asked (RUNNING, ``trial_id``) would take the study past
    ``n_trials``: the finished trials plus the live running trials ahead of it already make
    ``n_trials``. Ahead means an earlier number, or started no later (a requeued point popped
    after a newer trial started).

    Why this cannot overshoot: of two trials that run at once, the one whose RUNNING state was
    written second sees the other when it checks; it counts it unless the other has a higher
    number and started later, which the other, being written first, cannot have. So no two
    trials both skip each other, and at most ``n_trials`` finish. A driver whose claim is
    surplus gives it back (:func:`give_back`) and waits for the others."""
    trials = study.get_trials(deepcopy=False)
    mine = next((t for t in trials if t._trial_id == trial_id), None)
    if mine is None:
        return False
    finished = sum(1 for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED))
    start = mine.datetime_start or datetime.max

    def ahead(other: FrozenTrial) -> bool:
        return other.number < mine.number or (other.datetime_start is not None and other.datetime_start <= start)

    others = [t for t in live_running(study, trials) if t._trial_id != trial_id and ahead(t)]
    return finished + len(others) >= n_trials


def give_back(study: optuna.Study, trial_id: int) -> None:
    """Return a surplus claim to the queue (RUNNING -> WAITING): an enqueued or grid point it
    popped stays queued, and a new trial waits there for a later run or a failed trial."""
    try:
        study._storage.set_trial_state_values(trial_id, TrialState.WAITING)
    except optuna.exceptions.UpdateFinishedTrialError:
        pass


def set_user_attrs(trial: optuna.Trial, attrs: dict[str, Any]) -> None:
    """Set several user attributes of a running trial in one storage transaction.

    Why: a finished trial carries some thirty result attributes, and ``Trial.set_user_attr``
    commits each on its own (on sqlite, one journal sync per attribute, ~90 ms per trial). Optuna
    has no public call that writes several at once, so on an RDB storage the attributes go through
    the storage's own per-attribute writer inside a single session and commit; any other storage
    (or an Optuna without that writer) gets one ``set_user_attr`` per attribute, as before. The
    stored rows are the same either way.
    """
    if not attrs:
        return
    storage = trial.storage
    backend = getattr(storage, "_backend", storage)  # the study's cache wraps the RDB storage
    write = getattr(backend, "_set_trial_attr_without_commit", None)
    if isinstance(backend, optuna.storages.RDBStorage) and write is not None:
        try:
            from optuna.storages._rdb.models import TrialUserAttributeModel
            from optuna.storages._rdb.storage import _create_scoped_session
        except ImportError:
            pass
        else:
            with _create_scoped_session(backend.scoped_session, True) as session:
                if not _upsert_user_attrs(backend, session, TrialUserAttributeModel, trial._trial_id, attrs):
                    for key, value in attrs.items():
                        write(session, TrialUserAttributeModel, trial._trial_id, key, value)
            trial._cached_frozen_trial.user_attrs.update(attrs)
            return
    for key, value in attrs.items():
        trial.set_user_attr(key, value)


def _upsert_user_attrs(backend: Any, session: Any, model: Any, trial_id: int, attrs: dict[str, Any]) -> bool:
    """All attributes as one multi-row upsert (sqlite, PostgreSQL), after the same "is the trial
    still running" check Optuna makes; False where the dialect has no such statement."""
    name = backend.engine.name
    if name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    elif name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        return False
    from optuna.storages._rdb.models import TrialModel

    row = TrialModel.find_or_raise_by_id(trial_id, session)
    backend.check_trial_is_updatable(trial_id, row.state)
    statement = insert(model).values(
        [{"trial_id": trial_id, "key": key, "value_json": json.dumps(value)} for key, value in attrs.items()]
    )
    session.execute(statement.on_conflict_do_update(
        index_elements=[model.trial_id, model.key], set_={"value_json": statement.excluded.value_json}
    ))
    return True


def record_outcome(study: optuna.Study, trial: optuna.Trial, outcome: TrialOutcome, spec: StudySpec) -> None:
    """Tell the study how a trial ended, with every result metric as a user attribute (written in
    one transaction, see :func:`set_user_attrs`) and the spec's constraints as Optuna constraints
    (feasible when <= 0)."""
    attrs = dict(outcome.attrs)
    if outcome.state == PRUNED:
        attrs["pruned_reason"] = outcome.error or "pruned"
    elif outcome.state != COMPLETE:
        attrs[REASON_ATTR] = outcome.error or "failed"
    set_user_attrs(trial, attrs)
    if outcome.state == COMPLETE:
        for constraint in spec.constraints:
            trial.set_constraint(constraint.name, constraint.violation(float(outcome.attrs[constraint.metric])))
        study.tell(trial, outcome.values)
    elif outcome.state == PRUNED:
        study.tell(trial, state=TrialState.PRUNED)
    else:
        study.tell(trial, state=TrialState.FAIL)


@dataclass(frozen=True)
class Counts:
    complete: int
    pruned: int
    failed: int
    running: int
    waiting: int

    @property
    def finished(self) -> int:
        """Trials that count towards ``n_trials``."""
        return self.complete + self.pruned


def study_counts(study: optuna.Study) -> Counts:
    states = [t.state for t in study.get_trials(deepcopy=False)]
    return Counts(
        complete=states.count(TrialState.COMPLETE),
        pruned=states.count(TrialState.PRUNED),
        failed=states.count(TrialState.FAIL),
        running=states.count(TrialState.RUNNING),
        waiting=states.count(TrialState.WAITING),
    )


def is_feasible(trial: optuna.trial.FrozenTrial) -> bool:
    """Whether a finished trial meets every constraint (violations <= 0; none recorded: yes)."""
    constraints = trial.constraints or []  # a dict by name in Optuna 5, a list before
    values = constraints.values() if isinstance(constraints, dict) else constraints
    return all(float(c) <= 0.0 for c in values)


def pareto_front(study: optuna.Study) -> list[dict[str, Any]]:
    """The best trials (the Pareto front; feasible ones only under constraints), by number."""
    from ..metrics.pareto import non_dominated

    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.values is not None and is_feasible(t)]
    if not done:
        return []
    maximize = [d == optuna.study.StudyDirection.MAXIMIZE for d in study.directions]
    mask = non_dominated([list(t.values) for t in done], maximize)  # ties within float32 noise are ties
    best = [t for t, keep in zip(done, mask) if keep]
    return [{"number": t.number, "params": dict(t.params), "values": list(t.values)} for t in sorted(best, key=lambda t: t.number)]


def load_study(study_dir: str | Path) -> optuna.Study:
    """Open the study of a study directory for reading (the report uses this)."""
    study_dir = Path(study_dir)
    info = read_study_json(study_dir)
    if info is None:
        raise UserInputError(f"{study_dir}: not a study directory (no {STUDY_FILE})")
    storage = info.get("storage") or {}
    if storage.get("relative"):
        url = f"sqlite:///{(study_dir / DB_FILE).resolve()}"
    elif str(storage.get("source", "")).startswith("env:") and os.environ.get(storage["source"][4:]):
        url = os.environ[storage["source"][4:]]
    else:
        saved = (_read_spec_file(study_dir) or {}).get("spec") or {}
        url = str(((saved.get("search") or {}).get("storage")) or storage.get("url") or "")
        if is_masked(url):  # the password is never written down: this process or the environment knows it
            url = _OPENED_URLS.get(os.path.realpath(study_dir)) or next(
                (os.environ[name] for name in STORAGE_ENV if os.environ.get(name)), "")
            if not url:
                raise UserInputError(f"{study_dir}: its storage needs a password, which is not kept in the study "
                                     f"directory; set {STORAGE_ENV[0]} to the storage URL")
    return optuna.load_study(study_name=info["study_name"], storage=readonly_storage_url(url))


def spec_of(study_dir: str | Path) -> StudySpec | None:
    """The validated spec a study directory was created with (None if it has none)."""
    saved = _read_spec_file(Path(study_dir))
    return spec_from_dict(saved["spec"]) if saved and isinstance(saved.get("spec"), dict) else None


class Heartbeat:
    """Records a heartbeat for every running trial of this driver, so another driver sharing the
    storage can tell a lost trial (no heartbeat for the grace period) from a slow one."""

    def __init__(self, storage: optuna.storages.RDBStorage, trial_ids: Callable[[], Iterable[int]],
                 interval: float = HEARTBEAT_S) -> None:
        self.storage, self.trial_ids, self.interval = storage, trial_ids, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="svite-heartbeat", daemon=True)

    def beat(self) -> None:
        for trial_id in list(self.trial_ids()):
            try:
                self.storage.record_heartbeat(trial_id)
            except Exception as err:  # a missed beat only delays nothing; never stop the study
                log.debug("heartbeat of trial id %s failed: %s", trial_id, err)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.beat()

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
