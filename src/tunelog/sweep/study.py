"""Studies: where they are stored, how they are made, and what a resumed one needs.

Storage is a journal file beside the MLflow store by default (cheap appends under a file lock,
safe for many processes on one machine) or any Optuna RDB URL. A study remembers the hash of
its search space (another space under its name is refused), its named configs are queued
once, and on resume trials whose worker died are failed as `interrupted` and queued again.
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import optuna
from optuna.trial import TrialState

from .. import tracking as t
from ..errors import SpecError, TunelogError
from ..spec import SearchSpec, Spec, flatten, rules, space
from ..tracking import Tracker
from ..util.owner import owner_dead
from ..util.redact import redact_url
from ..vocabulary import Outcome
from . import heartbeat, proxy
from .heartbeat import GRACE_SECONDS, HEARTBEAT_SECONDS

ATTR_RUN = "tunelog.run_id"
ATTR_OUTCOME = "tunelog.outcome"
ATTR_REASON = "tunelog.reason"
ATTR_OWNER = "tunelog.owner"  # host:pid of the worker running the trial
ATTR_CONFIG = "tunelog.config"
STUDY_RUN = "tunelog.sweep_run_id"
STUDY_SPACE = "tunelog.search"
STUDY_ENQUEUED = "tunelog.enqueued"
STUDY_HASH = "tunelog.space_hash"  # what the study searches: a different space under its name is refused
STUDY_REQUEUED = "tunelog.requeued"  # numbers of interrupted trials already queued again
STUDY_RETRIED = "tunelog.retried"  # numbers of failed trials queued again by --retry-failed (no longer counted)
INTERRUPTED = Outcome.INTERRUPTED  # Ctrl-C, SIGTERM or a dead worker: the trial runs again on resume
CLAIM_PREFIX = "tunelog-claim:"  # empty marker studies: the storage's unique study names make a claim atomic
START_WAIT_SECONDS = 120  # how long a joining invocation waits for the starter's sweep run

optuna.logging.set_verbosity(optuna.logging.WARNING)
# Heartbeats are recorded by tunelog's own ask/tell loop (see Heartbeat), and the matplotlib
# plots are "experimental" only in name: neither warning helps a user.
warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def default_storage(tracker_uri: str) -> str:
    """A journal file beside the MLflow store (or under ./mlruns when the store is a server).

    A journal appends one line per change under a file lock: an order of magnitude cheaper
    per write than SQLite, safe for many processes on one machine. Many machines: --storage
    with a PostgreSQL URL (heartbeats then let a worker fail another machine's dead trials).
    """
    if (db := t.sqlite_path(tracker_uri)) is not None:
        return str(db.resolve().parent / "optuna.journal")
    # one journal per server: a study's trials point at runs of the store they were logged to
    server = hashlib.sha256(redact_url(tracker_uri).encode()).hexdigest()[:8]
    return str(t.default_store_dir() / f"optuna-{server}.journal")


def open_storage(url: str, connections: Optional[int] = None) -> optuna.storages.BaseStorage:
    """A URL (sqlite://, postgresql://...) opens an RDB storage; grpc://HOST:PORT a study server's proxy;
    a plain path a journal file."""
    if proxy.is_proxy_url(url):
        return proxy.open_proxy(url)
    if "://" not in url:
        from optuna.storages.journal import JournalFileBackend

        Path(url).parent.mkdir(parents=True, exist_ok=True)
        try:
            storage = optuna.storages.JournalStorage(JournalFileBackend(url))
            storage.get_all_studies()  # replays the journal: a damaged one says so here, not mid-sweep
        except (ValueError, KeyError, TypeError) as exc:  # json's errors are ValueErrors
            raise TunelogError(
                f"study journal {url} is damaged ({type(exc).__name__}: {str(exc)[:120]}); nothing was written to it. "
                f"Restore it, or start a new study: --study NEW --storage NEW_FILE"
            ) from None
        return storage
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        t.tune_sqlite()
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 120}}  # workers queue on SQLite's lock
    elif connections:  # the study server: at most this many, its threads queue for them
        kwargs["engine_kwargs"] = {"pool_size": connections, "max_overflow": 0, "pool_timeout": 300}
    url = _driver_url(url)
    try:
        return _rdb(url, kwargs)
    except ImportError as exc:  # the database driver is not installed
        raise TunelogError(
            f"--storage {redact_url(url)}: no database driver ({exc}); for PostgreSQL install "
            f"tunelog's postgres extra: pip install 'tunelog[postgres]'"
        ) from None
    except Exception as exc:  # refused, unknown host, bad credentials: one line, the password left out
        damage = t.sqlite_damage(exc)
        if damage:
            raise TunelogError(
                f"--storage {redact_url(url)}: the study database is damaged ({damage}); nothing was written to it. "
                f"Restore it, or start a new study: --study NEW --storage NEW_URL"
            ) from None
        cause = redact_url(str(exc).splitlines()[0][:200]) if str(exc) else type(exc).__name__
        raise TunelogError(f"--storage {redact_url(url)}: cannot open the study storage: {cause}") from None


def _rdb(url: str, kwargs: dict[str, Any]) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage. Workers that open a fresh database together race Optuna's creation of its tables
    (a duplicate key, a failed commit): the losers open it again once the winner's tables are there."""
    for attempt in range(SCHEMA_TRIES):
        try:
            return optuna.storages.RDBStorage(
                url, heartbeat_interval=HEARTBEAT_SECONDS, grace_period=GRACE_SECONDS, **kwargs
            )
        except Exception as exc:
            said = str(exc)
            racing = isinstance(exc, optuna.exceptions.StorageInternalError) or "duplicate key" in said
            if not racing or attempt == SCHEMA_TRIES - 1:
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


SCHEMA_TRIES = 5


def _driver_url(url: str) -> str:
    """`postgresql://` and `postgresql+psycopg2://` on whichever PostgreSQL driver is installed (psycopg 3 or 2):
    SQLAlchemy picks one by the URL's name, not by what is there."""
    import importlib.util

    scheme, sep, rest = url.partition("://")
    if scheme not in ("postgresql", "postgres", "postgresql+psycopg2", "postgresql+psycopg"):
        return url
    has3, has2 = importlib.util.find_spec("psycopg") is not None, importlib.util.find_spec("psycopg2") is not None
    if scheme.endswith("psycopg") and has3 or scheme.endswith("psycopg2") and has2:
        return url
    if has3:
        return f"postgresql+psycopg{sep}{rest}"
    return f"postgresql+psycopg2{sep}{rest}" if has2 else url


def make_sampler(search: SearchSpec, n_trials: int, seat: int = 0) -> optuna.samplers.BaseSampler:
    """The spec's sampler, seeded with `seed + seat`: the study's first invocation draws exactly what `seed`
    promises, and every other one (another machine, a --workers process, a resume) draws its own sequence.
    One seed everywhere would have three machines sample the same learning rates in step."""
    seed = None if search.seed is None else search.seed + seat
    if search.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    startup = min(10, max(3, n_trials // 4))
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, multivariate=True, constant_liar=True)


def take_seat(study: optuna.Study) -> int:
    """This invocation's number among all that ever ran this study (0 for the first): unique across
    processes and machines, because each seat is a claim."""
    seat = 0
    while not claim(study, f"seat-{seat}"):
        seat += 1
    return seat


def make_pruner(spec: Spec, total_steps: int) -> optuna.pruners.BasePruner:
    assert spec.search is not None
    kind = spec.search.pruner.type
    if kind == "none" or spec.search.second_objective is not None:  # Optuna cannot prune multi-objective
        return optuna.pruners.NopPruner()
    if kind == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=spec.train.eval_every or 1, max_resource=total_steps)
    return optuna.pruners.MedianPruner(n_startup_trials=spec.search.pruner.startup_trials)


def directions(spec: Spec) -> list[str]:
    assert spec.search is not None
    second = spec.search.second_objective
    return [spec.tracking.direction] + ([second.direction] if second else [])


def suggest(trial: optuna.Trial, search: SearchSpec) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, p in search.params.items():
        if p.type == "categorical":
            values[name] = trial.suggest_categorical(name, p.choices)
        elif p.type == "int":
            values[name] = trial.suggest_int(name, int(p.min), int(p.max), step=int(p.step or 1), log=p.log)
        else:
            values[name] = trial.suggest_float(name, p.min, p.max, step=p.step, log=p.log)
    return values


def space_hash(spec: Spec, search: SearchSpec) -> str:
    """What a study searches: params, derived params and every rule that rejects (not the budget,
    not `--quick`'s cheaper training), so the README's `--quick` then full run share one study."""
    what = {
        "params": {k: v.model_dump() for k, v in search.params.items()},
        "derived": search.derived,
        "soft": [r.model_dump() for r in search.soft],
        "rules": [r.model_dump() for r in rules.hard_rules(spec)],
    }
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:12]


def check_space(study: optuna.Study, new: str, source: str, force: bool) -> None:
    """Resuming is for the same search: another space under an old name would inherit its trials."""
    old = study.user_attrs.get(STUDY_HASH)
    if old and old != new and not force:
        why = (
            f"study {study.study_name!r} was started with another search space (hash {old}, this spec's is "
            f"{new}); accepted: --study NEW for a new study, or --force-resume to go on with this one"
        )
        raise SpecError(source, [("search", why)])
    if old != new:
        study.set_user_attr(STUDY_HASH, new)


def claim(study: optuna.Study, key: str) -> bool:
    """True for exactly one caller per (study, key), across processes and machines sharing the storage.

    Why a marker study: a study name is unique in every Optuna storage (a unique index in an RDB, the
    journal's lock), so creating one is an atomic test-and-set where a user attribute is not: three
    invocations started in the same second all read "not enqueued yet" before any writes it."""
    try:
        study._storage.create_new_study(
            [optuna.study.StudyDirection.MINIMIZE], f"{CLAIM_PREFIX}{study.study_name}:{key}"
        )
        return True
    except optuna.exceptions.DuplicatedStudyError:
        return False


def is_claim(study_name: str) -> bool:
    return study_name.startswith(CLAIM_PREFIX)


def wait_for_sweep_run(study: optuna.Study, seconds: float = START_WAIT_SECONDS) -> Optional[str]:
    """The sweep run another invocation is creating for this study (it claimed the start), or None if it
    never appears (it died first): then this invocation makes one."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        run_id = study._storage.get_study_user_attrs(study._study_id).get(STUDY_RUN)
        if run_id:
            return run_id
        time.sleep(0.5)
    return None


def enqueue_named_configs(
    study: optuna.Study, spec: Spec, search: SearchSpec, n_trials: int, echo: Callable[[str], None]
) -> None:
    """The spec's named configs run first, then the sampler takes over (once per study, however many
    invocations start it at the same moment)."""
    if study.user_attrs.get(STUDY_ENQUEUED) or not claim(study, "enqueued"):
        return
    study.set_user_attr(STUDY_ENQUEUED, True)
    base = spec.flat_params()
    for name, preset in list(spec.configs.items())[:n_trials]:
        written = {**base, **flatten(preset.overrides)}
        values = {p: written[p] for p in search.params if p in written}
        kept, dropped = space.check_enqueue(search.params, values)
        helpers, unmet = space.solve_helpers(search, kept, written, spec.source)
        kept.update(helpers)
        if dropped:
            echo(f"config {name}: outside the search space, not seeded: {', '.join(dropped)}")
        if unmet:
            echo(
                f"config {name}: trains {', '.join(f'{k}={written[k]!r}' for k in unmet)} as written; no value of "
                f"the searched names in range derives it, so the trial records what was sampled for them"
            )
        if kept:
            study.enqueue_trial(kept, user_attrs={ATTR_CONFIG: name})


def recover(study: optuna.Study, tracker: Tracker, echo: Callable[[str], None], startup: bool = False) -> list[int]:
    """Trials whose worker died (same host: its pid is gone; elsewhere: heartbeat older than the grace) end
    as interrupted, their runs closed KILLED; every interrupted trial is queued again once, with the same
    params. Every invocation calls this before each new trial, so a dead machine's trial runs again soon."""
    trials = study.get_trials(deepcopy=False)  # one read of the storage for the common case: nothing died
    dead = [
        tr._trial_id
        for tr in trials
        if tr.state == TrialState.RUNNING and owner_dead(tr.user_attrs.get(ATTR_OWNER, ""))
    ]
    storage = study._storage
    if isinstance(storage, optuna.storages.RDBStorage) and storage.heartbeat_interval:
        dead += storage._get_stale_trial_ids(study._study_id)  # no public way to ask without failing them
    elif isinstance(storage, optuna.storages.GrpcStorageProxy):  # heartbeats do not cross the proxy
        dead += heartbeat.silent(trials)
    for trial_id in dict.fromkeys(dead):
        try:
            storage.set_trial_user_attr(trial_id, ATTR_OUTCOME, INTERRUPTED)  # Optuna has no public setter
            storage.set_trial_state_values(trial_id, state=TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another invocation failed it first
        tr = storage.get_trial(trial_id)
        run_id = tr.user_attrs.get(ATTR_RUN)
        if run_id and tracker.close_run(
            run_id, "KILLED", Outcome.FAILED, "worker died mid-trial; failed by another worker"
        ):
            echo(f"trial {tr.number}: its worker died; trial failed and run {run_id} closed KILLED")
    if startup:  # failed trials whose runs were left open (a crash between the two writes, an older tunelog)
        for tr in (t_ for t_ in trials if t_.state == TrialState.FAIL):
            run_id = tr.user_attrs.get(ATTR_RUN)
            if run_id and tracker.close_run(
                run_id, "KILLED", Outcome.FAILED, "worker died mid-trial; failed on resume"
            ):
                echo(f"trial {tr.number}: its worker died; trial failed and run {run_id} closed KILLED")
    if not dead and not any(tr.user_attrs.get(ATTR_OUTCOME) == INTERRUPTED for tr in trials):
        return []
    return requeue_interrupted(study)


def requeue_interrupted(study: optuna.Study) -> list[int]:
    """An interrupted trial did not finish, so it does not count: its params run again (Optuna's queue),
    once, whichever invocation gets there first."""
    done = set(study.user_attrs.get(STUDY_REQUEUED, []))
    interrupted = [
        tr
        for tr in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
        if tr.user_attrs.get(ATTR_OUTCOME) == INTERRUPTED and tr.params and tr.number not in done
    ]
    return _queue_again(study, interrupted, "requeue", "tunelog.requeued_from", STUDY_REQUEUED)


def failed_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Trials that failed (a crash, the script's error) and were not queued again yet: what a rerun with
    `--retry-failed` runs again. An oom, a divergence or a rejection would only repeat itself."""
    retried = set(study.user_attrs.get(STUDY_RETRIED, []))
    return [
        tr
        for tr in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
        if tr.user_attrs.get(ATTR_OUTCOME) == Outcome.FAILED and tr.params and tr.number not in retried
    ]


def retry_failed(study: optuna.Study) -> list[int]:
    """The failed trials' params queued again; the failed trials stop counting against n_trials, so the
    budget buys the same number of results."""
    return _queue_again(study, failed_trials(study), "retry", "tunelog.retried_from", STUDY_RETRIED)


def _queue_again(study: optuna.Study, trials: list, why: str, from_attr: str, remembered: str) -> list[int]:
    """`trials`' params queued again (with their named config, `from_attr` naming the trial they repeat),
    each once whichever invocation claims it first; their numbers added to the study attribute `remembered`.
    Returns the numbers queued here."""
    again = [tr for tr in trials if claim(study, f"{why}-{tr.number}")]
    for tr in again:
        attrs = {k: v for k, v in tr.user_attrs.items() if k == ATTR_CONFIG}
        study.enqueue_trial(tr.params, user_attrs={**attrs, from_attr: tr.number}, skip_if_exists=False)
    if again:
        done = set(study.user_attrs.get(remembered, []))
        study.set_user_attr(remembered, sorted(done | {tr.number for tr in again}))
    return [tr.number for tr in again]


def running_elsewhere(study: optuna.Study, me: str) -> list[optuna.trial.FrozenTrial]:
    """Trials other invocations are still training (not this process's, not known dead)."""
    return [
        tr
        for tr in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if tr.user_attrs.get(ATTR_OWNER) != me and not owner_dead(tr.user_attrs.get(ATTR_OWNER, ""))
    ]


def used_budget(study: optuna.Study, before: Optional[int] = None) -> int:
    """Trials that count against n_trials: started or finished; not merely queued, not over budget,
    not interrupted nor failed and retried (those run again). With `before`, only trials numbered below it."""
    retried = set(study.user_attrs.get(STUDY_RETRIED, []))
    return sum(
        1
        for tr in study.get_trials(deepcopy=False)
        if tr.state != TrialState.WAITING
        and tr.user_attrs.get(ATTR_OUTCOME) not in (Outcome.OVER_BUDGET, INTERRUPTED)
        and tr.number not in retried
        and (before is None or tr.number < before)
    )


def load_for_analysis(study_name: str, storage_url: str) -> optuna.Study:
    """A study opened to read: a SQLite file's journal mode is left as its owner set it."""
    if storage_url.startswith("sqlite:///"):
        t.leave_alone(storage_url[len("sqlite:///") :].split("?", 1)[0])
    try:
        return optuna.load_study(study_name=study_name, storage=open_storage(storage_url))
    except KeyError:
        summaries = optuna.get_all_study_summaries(open_storage(storage_url))
        names = [s.study_name for s in summaries if not is_claim(s.study_name)]  # markers, not studies
        raise TunelogError(
            f"no study {study_name!r} in {redact_url(storage_url)}; studies there: {', '.join(names) or 'none'}"
        ) from None
