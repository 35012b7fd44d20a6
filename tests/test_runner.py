"""The runner: ordered results whatever the number of workers, crashes contained, bounded memory."""

import os
import signal
from dataclasses import dataclass

import numpy as np
import pytest
from PIL import Image

from soartc_cli import runner, writers
from soartc_cli.discover import discover
from soartc_cli.transforms import KERNELS, TRANSFORM_PRESETS

SETTINGS = runner.ImageSettings(size=32, patch=8)
JOB = runner.SoartcJob(SETTINGS, TRANSFORM_PRESETS["all"], ("beta", "noise"), "datum", KERNELS)
CSV = writers.OutputFormat("csv", "wide", 7)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(1)
    for i in range(13):
        sub = root / ("a" if i % 3 else "b")
        sub.mkdir(exist_ok=True)
        pixels = (rng.random((40 + i, 50, 3)) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(sub / f"img{i:02d}.png")
    (root / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    Image.new("L", (48, 48), 255).save(root / "b" / "white.png")
    return root


def _texts(outcomes):
    return [
        (o.index, o.path, getattr(o, "text", None), getattr(o, "error", None)) for o in outcomes
    ]


@pytest.mark.parametrize("workers", [2, 3])
def test_output_is_identical_whatever_the_number_of_workers(folder, workers):
    files = discover([str(folder)])
    task = runner.Task(JOB, CSV)
    one = _texts(runner.run_images(files, task, workers=1))
    many = _texts(runner.run_images(files, task, workers=workers, per_worker=1, window=3))
    assert many == one
    assert [i for i, *_ in one] == list(range(len(files)))
    assert sum(e is not None for *_, e in one) == 1  # broken.png, and only it


@dataclass(frozen=True)
class CrashOnWhite:
    """A job whose worker dies (SIGKILL) on an all-white image, like a decoder crashing."""

    image: runner.ImageSettings = SETTINGS

    @property
    def columns(self):
        return JOB.columns

    def compute(self, pixels):
        if pixels.min() > 0.99:
            os.kill(os.getpid(), signal.SIGKILL)
        return JOB.compute(pixels)


def test_a_worker_crash_loses_only_its_image(folder):
    files = discover([str(folder)])
    task = runner.Task(CrashOnWhite(), CSV)
    outcomes = list(runner.run_images(files, task, workers=2, per_worker=2))
    assert [o.index for o in outcomes] == list(range(len(files)))
    failed = {o.path: o.error for o in outcomes if isinstance(o, runner.Failure)}
    assert set(failed) == {"b/broken.png", "b/white.png"}
    assert "worker process crashed" in failed["b/white.png"]
    assert "signal 9" in failed["b/white.png"]
    good = [o.data for o in outcomes if isinstance(o, runner.ImageResult)]
    want = [o.data for o in runner.run_images(files, runner.Task(JOB, CSV)) if o.path in
            {g.path for g in outcomes if isinstance(g, runner.ImageResult)}]  # fmt: skip
    assert good == want
    assert len(good) == len(files) - 2


def test_run_job_streams_header_then_rows_and_counts(folder, tmp_path):
    files = discover([str(folder)])
    out = tmp_path / "out.csv"
    seen = []
    with open(out, "wb") as sink:
        report = runner.run_job(files, runner.Task(JOB, CSV), sink=sink, on_outcome=seen.append)
    lines = out.read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("path,label,width,height,bend1.beta.r00c00,")
    assert len(lines) == 1 + report.processed
    assert report.found == len(files) == len(seen)
    assert [f.path for f in report.failures] == ["b/broken.png"]
    assert not report.ok


def test_strict_stops_at_the_first_failure(folder):
    files = discover([str(folder)])
    with pytest.raises(runner.StrictStop, match=r"broken\.png"):
        runner.run_job(files, runner.Task(JOB, CSV), sink=None, strict=True)


def test_size_zero_wide_layout_skips_images_whose_grid_differs(folder):
    files = [f for f in discover([str(folder)]) if "broken" not in f.path]
    job = runner.SoartcJob(
        runner.ImageSettings(size=0, patch=8), ("rot90",), ("beta",), "datum", KERNELS
    )
    import io

    sink = io.BytesIO()
    report = runner.run_job(files, runner.Task(job, CSV), sink=sink)
    assert report.failures
    assert all("patch grid" in f.error for f in report.failures)
    header = sink.getvalue().decode().splitlines()[0].split(",")
    assert len(header) == 4 + report_grid_cells(files[0])
    long_report = runner.run_job(
        files, runner.Task(job, writers.OutputFormat("csv", "long")), sink=io.BytesIO()
    )
    assert not long_report.failures


def report_grid_cells(file):
    with Image.open(file.source) as im:
        return (im.width // 8) * (im.height // 8)


class _Watched(list):
    """A file list that records how far the runner has read into it."""

    furthest = -1

    def __iter__(self):
        for index, item in enumerate(list.__iter__(self)):
            self.furthest = index
            yield item


def test_window_bounds_what_is_held(folder):
    files = _Watched(discover([str(folder)]) * 4)
    task = runner.Task(JOB, CSV)
    window, chunk = 6, 2
    outcomes = runner.run_images(files, task, workers=2, per_worker=1, chunk=chunk, window=window)
    yielded = 0
    for outcome in outcomes:
        assert outcome.index == yielded
        yielded += 1
        # Never more than a window (plus the chunk being gathered) taken beyond what is out.
        assert files.furthest < yielded + window + chunk, (files.furthest, yielded)
    assert yielded == len(files)


def test_workers_start_from_a_fresh_interpreter_when_threads_run(folder, monkeypatch):
    # With other threads in the process (a notebook, a GUI), forking could deadlock a worker:
    # the runner then starts its workers through the forkserver. Same outcomes either way.
    files = discover([str(folder)])
    task = runner.Task(JOB, CSV)
    monkeypatch.setattr(runner.threading, "active_count", lambda: 2)
    assert runner._context().get_start_method() in ("forkserver", "spawn")
    many = _texts(runner.run_images(files, task, workers=2))
    assert many == _texts(runner.run_images(files, task, workers=1))
