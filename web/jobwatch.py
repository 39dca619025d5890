"""FinishWatch: wakes the long-polls of ``GET /backtest/{id}?wait=S`` when a job ends here.

The job manager reports each job it finishes (its ``"finished"`` event, from any thread);
a waiting request sleeps on an `asyncio.Event` until then or until its next database check
(`POLL_S`): a job finished by another server sharing the database, or cancelled while
queued, is seen by that check.
"""

from __future__ import annotations

import asyncio
from typing import Any

POLL_S = 0.5  # a long-poll re-reads the job at least this often


class FinishWatch:
    """Per job id, the events of the requests waiting for it to end."""

    def __init__(self) -> None:
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop the waiting requests run on (set at start-up)."""
        self._loop = loop

    def on_event(self, name: str, data: dict[str, Any]) -> None:
        """A job manager event (any thread): ``finished`` wakes that job's waiters."""
        job_id = data.get("job")
        if name == "finished" and isinstance(job_id, str) and self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self.wake, job_id)

    def wake(self, job_id: str) -> None:
        """Wake the requests waiting on ``job_id`` (on the loop)."""
        for event in self._waiters.get(job_id, ()):
            event.set()

    async def wait(self, job_id: str, timeout: float) -> None:
        """Sleep until ``job_id`` is reported finished or ``timeout`` seconds pass."""
        event = asyncio.Event()
        self._waiters.setdefault(job_id, set()).add(event)
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            pass
        finally:
            waiters = self._waiters.get(job_id)
            if waiters is not None:
                waiters.discard(event)
                if not waiters:
                    del self._waiters[job_id]
