"""Forked worker processes a build uses (chunking, calibration): ending them when one has died or hangs."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def end_processes(pool, wait: float = 30.0) -> None:
    """End a `ProcessPoolExecutor`'s processes now instead of waiting for them (one has died or hangs): before
    Python 3.14's `terminate_workers` there is no public way. Its own thread then fails every unfinished future and
    reaps the processes; this waits up to `wait` seconds for that."""
    for process in list((pool._processes or {}).values()):
        process.kill()
    results = getattr(pool, "_result_queue", None)
    if results is not None:
        # the pool never writes to its results pipe itself: with this end closed and the workers dead, a result a
        # worker was killed halfway through sending reads as the pipe's end, instead of a wait for the rest forever
        results._writer.close()
    manager = getattr(pool, "_executor_manager_thread", None)
    pool.shutdown(wait=False)  # (cancelling futures beside that thread races with it: InvalidStateError in 3.11)
    if manager is not None:
        manager.join(wait)
        if manager.is_alive():
            log.warning("a worker pool's thread did not end within %.0f s of its processes being killed", wait)
