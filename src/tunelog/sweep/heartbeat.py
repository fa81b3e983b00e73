"""A trial's sign of life, so that a worker on another machine can tell its worker died.

An RDB storage records Optuna's own heartbeat; through the study server (`sweep/proxy.py`), which does not
carry heartbeats, the trial's `tunelog.beat` user attribute. Either way, every `HEARTBEAT_SECONDS` from a
thread of the trial's worker; a RUNNING trial silent for `GRACE_SECONDS` is failed and re-queued.
"""

from __future__ import annotations

import threading
import time
from typing import Optional

import optuna

HEARTBEAT_SECONDS, GRACE_SECONDS = 10, 60
ATTR_BEAT = "tunelog.beat"  # through the study server: the trial's worker's last sign of life (epoch seconds)


class Heartbeat:
    """Records the trial's heartbeat so a worker on another machine can tell this one died."""

    def __init__(self, storage, trial: optuna.Trial):
        self.storage, self.trial_id = storage, trial._trial_id  # Optuna exposes no public id accessor
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def __enter__(self) -> "Heartbeat":
        if isinstance(self.storage, (optuna.storages.RDBStorage, optuna.storages.GrpcStorageProxy)):
            self._record()
            self._thread = threading.Thread(target=self._beat, daemon=True)
            self._thread.start()
        return self

    def _record(self) -> None:
        if isinstance(self.storage, optuna.storages.RDBStorage):
            self.storage.record_heartbeat(self.trial_id)
        else:  # through the study server, which carries no heartbeat: a user attribute
            self.storage.set_trial_user_attr(self.trial_id, ATTR_BEAT, time.time())

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            try:
                self._record()
            except Exception:  # a missed beat is not worth a crash
                pass

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()


def silent(trials: list) -> list[int]:
    """RUNNING trials whose last beat (through the study server) is older than `GRACE_SECONDS`: their worker
    died, whichever machine it was on."""
    now = time.time()
    return [
        tr._trial_id  # Optuna exposes no public id accessor
        for tr in trials
        if tr.state == optuna.trial.TrialState.RUNNING
        and isinstance(tr.user_attrs.get(ATTR_BEAT), (int, float))
        and now - tr.user_attrs[ATTR_BEAT] > GRACE_SECONDS
    ]
