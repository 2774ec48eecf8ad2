"""The one kind of background job of the app: a training run (Train page) or an experiment suite
(Experiments page). The app holds one job object of each kind, and each runs one work at a time.

The work runs in a daemon thread that never calls ``st.*``. It writes progress into the job's
state only under the job's lock, through ``JobContext``; the pages poll ``snapshot()`` from an
``st.fragment(run_every=...)``. ``cache.training_job()`` and ``cache.suite_job()`` hand every
session the same job object (``st.cache_resource``), so a second start while one runs is refused.

States: idle -> loading (-> running) (-> stopping) -> finished | cancelled | failed; a work that
returns a ``cancelled`` field decides between finished and cancelled itself.
"""
from __future__ import annotations

import copy
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable

from nram_core.fileio import DataError

ACTIVE = ("loading", "running", "stopping")


@dataclass(frozen=True)
class JobContext:
    """What the work function of one start sees: its job, its id, and the stop request."""

    job: "BackgroundJob"
    job_id: int

    @property
    def stop(self) -> threading.Event:
        return self.job._stop

    def update(self, **values: Any) -> None:
        """Set state fields (ignored once a newer job started; ``running`` never undoes ``stopping``)."""
        self.change(lambda state: state.update(values))

    def change(self, edit: Callable[[dict[str, Any]], None]) -> None:
        """Apply ``edit`` to the state under the lock (appending to its lists, for example)."""
        with self.job._lock:
            state = self.job._state
            if state["job_id"] != self.job_id:
                return
            status = state["status"]
            edit(state)
            if status == "stopping" and state["status"] == "running":
                state["status"] = "stopping"


Work = Callable[[JobContext], "dict[str, Any] | None"]


class JobSlot:
    """The jobs of one server that share its CPU: while one of them works, none of the others starts."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.jobs: list[BackgroundJob] = []


class BackgroundJob:
    def __init__(self, noun: str, slot: JobSlot | None = None) -> None:
        """``noun`` names the work in messages ("training run", "suite"); ``slot``: the server's
        other jobs, which must be idle for this one to start."""
        self.noun = noun
        self.slot = slot or JobSlot()
        self.slot.jobs.append(self)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._state: dict[str, Any] = {"job_id": 0, "status": "idle"}

    # ---- read side (script thread) ---------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return copy.deepcopy(self._state)

    @property
    def busy(self) -> bool:
        with self._lock:
            return self._state["status"] in ACTIVE

    def start(self, work: Work, *, label: str, state: dict[str, Any] | None = None) -> str | None:
        """Run ``work(context)`` in the background, with ``state`` as its first fields; returns None,
        or a message saying why it cannot start. ``work`` returns the ``result`` field."""
        with self.slot.lock:
            for other in self.slot.jobs:
                if other is not self and other.busy:
                    running = other.snapshot().get("label")
                    return (f"A {other.noun} is running on this server ({running}); one job runs at a time, so "
                            f"this {self.noun} cannot start until it ends.")
            return self._start(work, label=label, state=state)

    def _start(self, work: Work, *, label: str, state: dict[str, Any] | None) -> str | None:
        with self._lock:
            if self._state["status"] in ACTIVE:
                return (f"A {self.noun} is already in progress ({self._state.get('label')}). Only one "
                        f"{self.noun} runs at a time in this app; wait for it to finish or cancel it.")
            job_id = self._state["job_id"] + 1
            self._stop.clear()
            self._state = {"job_id": job_id, "status": "loading", "label": label, "started": time.time(),
                           "finished": None, "error": None, "result": None, **(state or {})}
            context = JobContext(job=self, job_id=job_id)
            self._thread = threading.Thread(target=self._run, args=(context, work), daemon=True,
                                            name=f"nram-{self.noun.replace(' ', '-')}-{job_id}")
            self._thread.start()
        return None

    def cancel(self) -> None:
        """Ask the work to stop (it checks ``context.stop`` between steps)."""
        with self._lock:
            if self._state["status"] not in ACTIVE:
                return
            self._state["status"] = "stopping"
            self._stop.set()

    def join(self, timeout: float | None = None) -> None:
        thread = self._thread
        if thread is not None:
            thread.join(timeout)

    # ---- the job's thread --------------------------------------------------------------------
    def _run(self, context: JobContext, work: Work) -> None:
        status, error, result = "failed", None, None
        try:
            result = work(context)
            # The work knows best: a suite that completed while a stop was requested did finish.
            said = result.get("cancelled") if isinstance(result, dict) else None
            cancelled = self._stop.is_set() if said is None else bool(said)
            status = "cancelled" if cancelled else "finished"
        except (DataError, ValueError, OSError) as exc:
            error = str(exc)
        except Exception as exc:  # noqa: BLE001 - reported on the page, never raised into Streamlit
            error = f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
        finally:
            def finish(state: dict[str, Any]) -> None:
                state.update(status=status, error=error, result=result, finished=time.time())

            context.change(finish)
