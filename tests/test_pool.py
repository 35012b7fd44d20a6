"""The generic ordered process pool: input order for any number of workers, crashes contained,
bounded memory, the forkserver path, workers that cannot start."""

import os
import signal
from dataclasses import dataclass

import pytest

from soartc_cli.pipeline import pool


@dataclass(frozen=True)
class Out:
    index: int
    value: bytes
    pid: int


def work(index, item, common):
    """A module-level job (workers may be started from a fresh interpreter)."""
    return Out(index, (f"{item}:{common}:" * (1 + item % 5)).encode(), os.getpid())


def crash_on(index, item, common):
    """Like a decoder crashing: the worker process dies by SIGKILL on the item ``common``."""
    if item == common:
        os.kill(os.getpid(), signal.SIGKILL)
    return Out(index, str(item * item).encode(), os.getpid())


def fail_on(index, item, common):
    """A job that raises instead of turning its error into a result: it ends the worker."""
    if item == common:
        raise ValueError("not turned into a result")
    return Out(index, str(item).encode(), os.getpid())


def on_crash(index, item, reason):
    return Out(index, f"crashed: {reason}".encode(), -1)


def _results(outcomes):
    return [(o.index, o.value) for o in outcomes]


ITEMS = list(range(37))


@pytest.mark.parametrize("workers", [1, 2, 3])
@pytest.mark.parametrize("chunk", [1, 4])
def test_results_come_in_input_order_for_any_number_of_workers(workers, chunk):
    outcomes = list(pool.imap_ordered(work, ITEMS, "c", on_crash=on_crash, workers=workers,
                                      chunk=chunk, per_worker=1))  # fmt: skip
    assert _results(outcomes) == [(i, work(i, i, "c").value) for i in ITEMS]
    pids = {o.pid for o in outcomes}
    if workers == 1:
        assert pids == {os.getpid()}  # in-process
    else:
        assert os.getpid() not in pids
        assert 1 <= len(pids) <= workers


@pytest.mark.parametrize("workers", [2, 3])
def test_a_worker_crash_fails_only_its_item(workers):
    outcomes = list(pool.imap_ordered(crash_on, ITEMS, 13, on_crash=on_crash, workers=workers,
                                      chunk=4, per_worker=2))  # fmt: skip
    assert [o.index for o in outcomes] == ITEMS
    crashed = [o for o in outcomes if o.pid == -1]
    assert [(o.index, o.value) for o in crashed] == [(13, b"crashed: signal 9")]
    good = [(o.index, o.value) for o in outcomes if o.pid != -1]
    assert good == [(i, str(i * i).encode()) for i in ITEMS if i != 13]


def test_two_crashes_in_one_chunk_fail_both_and_nothing_else():
    items = [0, 1, 2, 3, 2, 5, 6, 7]  # the crashing item twice in the first chunk
    outcomes = list(pool.imap_ordered(crash_on, items, 2, on_crash=on_crash, workers=2, chunk=8))
    assert [o.index for o in outcomes if o.pid == -1] == [2, 4]
    assert [o.value for o in outcomes if o.pid != -1] == [b"0", b"1", b"9", b"25", b"36", b"49"]


def test_an_exception_in_the_function_ends_its_worker_like_a_crash():
    outcomes = list(pool.imap_ordered(fail_on, ITEMS[:9], 4, on_crash=on_crash, workers=2))
    assert [o.value for o in outcomes][3:6] == [b"3", b"crashed: exit code 1", b"5"]


class _Watched(list):
    """A list that records how far the pool has read into it."""

    furthest = -1

    def __iter__(self):
        for index, item in enumerate(list.__iter__(self)):
            self.furthest = index
            yield item


def test_the_window_bounds_what_is_taken_ahead():
    items = _Watched(range(60))
    window, chunk = 6, 2
    outcomes = pool.imap_ordered(work, items, "w", on_crash=on_crash, workers=2, per_worker=1,
                                 chunk=chunk, window=window)  # fmt: skip
    yielded = 0
    for outcome in outcomes:
        assert outcome.index == yielded
        yielded += 1
        # Never more than a window (plus the chunk being gathered) taken beyond what is out.
        assert items.furthest < yielded + window + chunk, (items.furthest, yielded)
    assert yielded == len(items)


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_closing_the_iterator_stops_the_workers():
    outcomes = pool.imap_ordered(work, range(500), "x", on_crash=on_crash, workers=2, chunk=1)
    first = [next(outcomes) for _ in range(3)]
    pids = {o.pid for o in first}
    assert all(_alive(p) for p in pids)
    outcomes.close()
    assert not any(_alive(p) for p in pids)


def test_workers_start_from_a_fresh_interpreter_when_threads_run(monkeypatch):
    # With other threads in the process (a notebook, a GUI), forking could deadlock a worker:
    # the pool then starts its workers through the forkserver. Same results either way.
    monkeypatch.setattr(pool.threading, "active_count", lambda: 2)
    assert pool._context().get_start_method() in ("forkserver", "spawn")
    many = list(pool.imap_ordered(work, ITEMS, "f", on_crash=on_crash, workers=2))
    assert _results(many) == [(i, work(i, i, "f").value) for i in ITEMS]
    assert os.getpid() not in {o.pid for o in many}


def _exit_at_once(conn, function, common, parent):
    os._exit(3)


def test_a_worker_that_cannot_start_is_a_start_error(monkeypatch):
    # A broken install, say. (Forked or through the fork server, the patched loop is what runs:
    # the server unpickles it by its name in this module.)
    monkeypatch.setattr(pool, "_worker_main", _exit_at_once)
    with pytest.raises(pool.WorkerStartError, match=r"could not start \(exit code 3\)"):
        list(pool.imap_ordered(work, ITEMS, "s", on_crash=on_crash, workers=2))


def test_one_worker_runs_in_process_and_an_exception_propagates():
    with pytest.raises(ValueError, match="not turned into a result"):
        list(pool.imap_ordered(fail_on, ITEMS, 2, on_crash=on_crash, workers=1))
