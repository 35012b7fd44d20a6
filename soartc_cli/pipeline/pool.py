"""An ordered process pool: a function mapped over items in worker processes, in input order.

Generic: it knows nothing of images. Results come back in input order with a bounded number in
flight, so memory does not grow with the input; a worker that dies fails only the item it was
working on (its chunk is retried item by item); workers die with their parent; closing the
iterator (or an exception such as KeyboardInterrupt) stops them.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from soartc_cli.errors import SoartcError
from soartc_cli.pipeline.startup import limit_blas_threads, single_thread_environment, tune_malloc

__all__ = ["WorkerStartError", "imap_ordered"]

#: ``function(index, item, common) -> result``; every result has an ``index`` attribute.
Function = Callable[[int, Any, Any], Any]
#: ``on_crash(index, item, reason) -> result`` for an item whose worker died on it.
OnCrash = Callable[[int, Any, str], Any]


def _die_with_parent(parent: int) -> None:
    """Ask Linux to kill this worker when its parent dies (SIGKILL of the parent included)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the worker notices at its next message
        pass
    if os.getppid() != parent:
        # The parent died before the request took effect, or this worker was started by a fork
        # server (its parent is the server, whose end the request then follows): only a run
        # that is gone ends the worker here.
        try:
            os.kill(parent, 0)
        except ProcessLookupError:
            os._exit(1)
        except OSError:
            pass


@contextmanager
def _signals_held():
    """Block SIGINT and SIGTERM in this thread for the block; pending ones arrive after it."""
    held = {signal.SIGINT, signal.SIGTERM}
    try:
        before = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    except (AttributeError, OSError):  # no pthread_sigmask: nothing to hold
        yield
        return
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def _worker_main(conn, function: Function, common: Any, parent: int) -> None:
    """Worker loop: receive a chunk of ``(index, item)``, send back its results; ``None`` ends."""
    _die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C for everyone
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a forked worker must not run the parent's
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})  # held at the fork
    tune_malloc()
    limit_blas_threads(1)  # forked from a numpy that may have started several BLAS threads
    conn.send(_READY)
    while True:
        try:
            chunk = conn.recv()
        except EOFError:
            return
        if chunk is None:
            return
        conn.send([function(index, item, common) for index, item in chunk])


_READY = "ready"


class WorkerStartError(SoartcError):
    """A worker process died before it could take any image (for example a broken install)."""


class _Worker:
    """One worker process, its pipe and the tasks sent to it, oldest first."""

    def __init__(self, context, job: tuple) -> None:
        parent, child = context.Pipe()
        self.process = context.Process(target=_worker_main, args=(child, *job), daemon=True)
        # Ctrl-C and SIGTERM wait while the worker is forked: a signal taken by the child before
        # it set its own handlers ("Exception ignored in _after_fork … KeyboardInterrupt") or by
        # the parent half-way through a start would leave a worker that nobody stops.
        with _signals_held():
            self.process.start()
        child.close()
        self.conn = parent
        self.busy: deque[list[tuple[int, Any]]] = deque()  # chunks sent, oldest first
        self.ready = False

    def send(self, chunk: list[tuple[int, Any]]) -> None:
        self.busy.append(chunk)
        try:
            self.conn.send(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the worker is dead: its sentinel wakes the loop, and _collect handles it

    def stop(self, *, kill: bool = False) -> None:
        if kill:
            self.process.kill()
        else:
            try:
                self.conn.send(None)
            except (BrokenPipeError, OSError):
                pass
        self.process.join(timeout=None if not kill else 5)
        self.conn.close()


def _context():
    """How to start workers: fork when this process has one thread, else forkserver or spawn.

    A fork starts at once with everything imported (0.2–0.5 s less per run than a fresh
    interpreter, which counts in batch jobs); forking a process that runs other threads can
    deadlock the child, so then a start method that begins from a fresh interpreter is used.
    """
    import multiprocessing  # only runs with workers need it: 6 ms less start-up for the others

    methods = multiprocessing.get_all_start_methods()
    if "fork" in methods and threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    if "forkserver" in methods:
        context = multiprocessing.get_context("forkserver")
        # The server imports the pipeline once; each worker is a fork of it, ready at once.
        context.set_forkserver_preload(["soartc_cli.pipeline.jobs", "soartc_cli.core.features"])
        return context
    return multiprocessing.get_context("spawn")


def _prepare_environment() -> None:
    """Give worker processes one BLAS thread each (unless the user chose otherwise)."""
    for name, value in single_thread_environment().items():
        os.environ.setdefault(name, value)


def imap_ordered(
    function: Function,
    items: Sequence[Any],
    common: Any,
    *,
    on_crash: OnCrash,
    workers: int = 1,
    per_worker: int = 2,
    chunk: int = 8,
    window: int | None = None,
) -> Iterator[Any]:
    """Yield ``function(index, item, common)`` for every item, in input order.

    Parameters
    ----------
    function : callable
        ``function(index, item, common)``; a module-level function (workers may be spawned).
        It should turn its own errors into results: an exception ends the worker like a crash.
    items : sequence
    common : object
        What every call shares (sent to each worker once).
    on_crash : callable
        ``on_crash(index, item, reason)``: the result of an item whose worker died on it.
    workers : int
        1 runs in this process; more start that many worker processes.
    per_worker : int
        Chunks sent ahead to each worker, so that none waits for the next one.
    chunk : int
        Consecutive images per message (8): the parent wakes once per chunk, not per image
        (each wake-up takes a core from a worker when there are as many workers as cores).
    window : int, optional
        At most this many images are in flight or waiting to be yielded (default
        ``4 * workers * per_worker * chunk``): memory stays flat however long ``items`` is.

    Notes
    -----
    A worker process that dies (a crash in a decoder) fails only the image it was working on:
    the images of its chunk are tried again one by one by a new worker, and the one that kills
    its worker again gets ``on_crash``'s result; the others' results are not lost.
    Closing the generator early (or an exception such as KeyboardInterrupt) kills the workers.
    """
    if workers <= 1:
        for index, item in enumerate(items):
            yield function(index, item, common)
        return
    from multiprocessing import connection

    window = window or 4 * workers * per_worker * chunk
    _prepare_environment()
    context = _context()
    # A forked child flushes the standard streams when it ends: nothing may wait in them.
    sys.stdout.flush()
    sys.stderr.flush()
    job = (function, common, os.getpid())
    pool = [_Worker(context, job) for _ in range(workers)]
    queue: deque[list[tuple[int, Any]]] = deque()  # chunks to send again, first
    source = iter(enumerate(items))
    done: dict[int, Any] = {}
    next_out = 0
    pending: list[tuple[int, Any]] = []
    taken = 0  # items taken so far
    exhausted = False
    try:
        while True:
            while next_out in done:
                yield done.pop(next_out)
                next_out += 1
            # Feed the workers: chunks to retry first, then new ones within the window.
            for worker in pool:
                while len(worker.busy) < per_worker:
                    if queue:
                        worker.send(queue.popleft())
                        continue
                    # Guided sizes: full chunks while much is left, then smaller ones, so that
                    # no worker idles through the last chunk of another.
                    left = len(items) - (pending[0][0] if pending else taken)
                    size = max(1, min(chunk, left // (2 * workers)))
                    while len(pending) < size and not exhausted:
                        item = next(source, None)
                        exhausted = item is None
                        if item is not None:
                            pending.append(item)
                            taken = item[0] + 1
                    beyond = pending and pending[-1][0] >= next_out + window
                    if not pending or (beyond and any(w.busy for w in pool)):
                        break  # (with nothing in flight, a chunk goes out whatever the window)
                    worker.send(pending)
                    pending = []
            if not any(w.busy for w in pool):
                if not exhausted or pending or queue or done:
                    raise RuntimeError("the runner stopped with images left")  # never silently
                break  # nothing in flight, nothing left to send: every outcome was yielded
            ready = connection.wait([w.conn for w in pool] + [w.process.sentinel for w in pool])
            for i, worker in enumerate(pool):
                if worker.conn in ready or worker.process.sentinel in ready:
                    pool[i] = _collect(worker, done, queue, context, job, on_crash)
    finally:
        for worker in pool:
            worker.stop(kill=bool(worker.busy) or not exhausted)


def _collect(worker: _Worker, done: dict, queue: deque, context, job: tuple, on_crash: OnCrash):
    """Take what ``worker`` has sent; replace it when it died. Returns the worker to keep."""
    try:
        while worker.conn.poll():
            message = worker.conn.recv()
            if message == _READY:
                worker.ready = True
                continue
            worker.busy.popleft()
            for outcome in message:
                done[outcome.index] = outcome
    except (EOFError, OSError):
        pass
    alive = worker.process.is_alive()  # asked once: the answer may change between two calls
    if not worker.ready and not alive:
        worker.stop(kill=True)
        raise WorkerStartError(
            f"a worker process could not start (exit code {worker.process.exitcode}); "
            "try --workers 1"
        )
    if alive:
        return worker
    if worker.busy:
        crashed = worker.busy.popleft()  # the chunk it was working on
        if len(crashed) == 1:
            index, item = crashed[0]
            code = worker.process.exitcode
            reason = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
            done[index] = on_crash(index, item, reason)
        # Chunks not started go back as they were; a crashed chunk goes back one image at a
        # time, so that the image that kills a worker is found and only it is lost.
        queue.extendleft(reversed(worker.busy))
        queue.extendleft([item] for item in reversed(crashed) if len(crashed) > 1)
        worker.busy.clear()
    worker.stop(kill=True)
    return _Worker(context, job)
