"""A trial's sign of life, so that a worker on another machine can tell its worker died.

An RDB storage records Optuna's own heartbeat; through the study server (`sweep/proxy.py`), which does not
carry heartbeats, the trial's `tunelog.beat` user attribute. Either way, every `HEARTBEAT_SECONDS` from a
thread of the trial's worker; a RUNNING trial silent for `GRACE_SECONDS` is failed and re-queued.
"""

from __future__ import annotations

import threading
from typing import Optional

import optuna

from . import proxy

HEARTBEAT_SECONDS, GRACE_SECONDS = 10, 60


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
        else:  # through the study server: a user attribute (see sweep/proxy.py)
            proxy.beat(self.storage, self.trial_id)

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
