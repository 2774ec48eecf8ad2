"""An experiment suite as an app background job (``jobs.BackgroundJob``), watched by the
Experiments page. The suite runs through ``nram_core.experiments.run_suite``, as the CLI's
``experiment`` command does."""
from __future__ import annotations

import dataclasses
from typing import Any

from nram_core.experiments import Cancelled, Progress, run_suite

from .jobs import BackgroundJob, JobContext

MAX_LOG_LINES = 200


def start_suite(job: BackgroundJob, *, label: str, **suite_args: Any) -> str | None:
    """Start ``run_suite(**suite_args)`` on ``job``; returns None, or why it cannot start."""

    def progress(context: JobContext, p: Progress) -> None:
        def record(s: dict[str, Any]) -> None:
            s.update(status="running", progress=dataclasses.asdict(p), fraction=p.fraction)
            if p.message:
                s["log"] = (s["log"] + [f"[{p.run}/{p.runs}] {p.message}"])[-MAX_LOG_LINES:]

        context.change(record)

    def work(context: JobContext) -> dict[str, Any]:
        try:
            folder = run_suite(progress=lambda p: progress(context, p), stop=context.stop, **suite_args)
        except Cancelled as exc:
            return {"cancelled": True, "message": str(exc)}
        context.update(fraction=1.0, folder=str(folder))
        return {"folder": str(folder), "cancelled": False}

    return job.start(work, label=label, state={"fraction": 0.0, "log": [], "progress": None, "folder": None,
                                                "settings": {k: str(v) for k, v in suite_args.items()}})
