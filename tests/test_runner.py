"""The run: per-image jobs through the pool (payload bytes whatever the number of workers, crashes
contained), streaming to a sink, strict runs, grids, the run function and its record."""

import io
import json
import os
import signal
from dataclasses import dataclass

import numpy as np
import pytest
from PIL import Image

from soartc_cli.core.transforms import KERNELS, TRANSFORM_PRESETS
from soartc_cli.errors import UsageError
from soartc_cli.imaging.discover import discover
from soartc_cli.output import formats
from soartc_cli.pipeline import jobs, runner
from soartc_cli.pipeline.pool import imap_ordered
from soartc_cli.settings.features import FeatureSettings
from soartc_cli.settings.image import ImageSettings
from soartc_cli.settings.run import InputSettings, OutputSettings, RunSettings

SETTINGS = ImageSettings(size=32, patch=8)
JOB = jobs.SoartcJob(
    FeatureSettings(SETTINGS, "datum", TRANSFORM_PRESETS["all"], ("beta", "noise"), KERNELS)
)
CSV = formats.choose_format("x.csv")
PARQUET = formats.choose_format("x.parquet", layout="long")


def _task(job, spec):
    return jobs.Task(job, None if spec is None else jobs.FormatEncoder(spec, job.columns))


class _SinkConsumer:
    """A format's sink as a run's consumer (what FileConsumer does, without a target)."""

    def __init__(self, sink):
        self.sink = sink
        self.encoder = jobs.FormatEncoder(sink.spec, sink.columns)
        layout = sink.spec.layout
        self.grid_hint = layout.grid_hint if layout.depends_on_grid() else None

    def begin(self, names):
        self.sink.begin(names)

    def write(self, result):
        self.sink.write(result.payload)

    def close(self, record):
        self.sink.close(record)

    def discard(self):
        pass


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


def _outcomes(files, task, **kwargs):
    return list(imap_ordered(jobs.process_image, files, task, on_crash=jobs.crashed, **kwargs))


def _payload_bytes(payload):
    """A payload as bytes: text formats' bytes; Parquet's keys and float64 numbers."""
    if payload is None or isinstance(payload, bytes):
        return payload
    keys, numbers = payload
    keys = {k: list(map(str, v)) for k, v in keys.items()}
    return json.dumps(keys).encode() + np.ascontiguousarray(numbers, dtype=np.float64).tobytes()


def _seen(outcomes):
    return [
        (o.index, o.path, _payload_bytes(getattr(o, "payload", None)), getattr(o, "error", None))
        for o in outcomes
    ]


@pytest.mark.parametrize("spec", [CSV, PARQUET], ids=["csv", "parquet-long"])
@pytest.mark.parametrize("workers", [2, 3])
def test_payloads_are_identical_whatever_the_number_of_workers(folder, workers, spec):
    files = discover([str(folder)])
    task = _task(JOB, spec)
    one = _seen(_outcomes(files, task, workers=1))
    many = _seen(_outcomes(files, task, workers=workers, per_worker=1, window=3))
    assert many == one
    assert [i for i, *_ in one] == list(range(len(files)))
    assert [p for _, p, _, e in one if e is not None] == ["b/broken.png"]
    assert all(payload for _, _, payload, e in one if e is None)


@dataclass(frozen=True)
class CrashOnWhite(jobs.FeatureJob):
    """A job whose worker dies (SIGKILL) on an all-white image, like a decoder crashing."""

    image: ImageSettings = SETTINGS

    @property
    def columns(self):
        return JOB.columns

    def compute(self, pixels):
        if pixels.min() > 0.99:
            os.kill(os.getpid(), signal.SIGKILL)
        return JOB.compute(pixels)

    def work_bytes(self, patches):
        return JOB.work_bytes(patches)

    def to_record(self):
        return JOB.to_record()


def test_every_job_implements_the_job_protocol():
    assert isinstance(JOB, jobs.Job)
    assert isinstance(CrashOnWhite(), jobs.Job)
    assert not isinstance(object(), jobs.Job)


def test_a_worker_crash_loses_only_its_image(folder):
    files = discover([str(folder)])
    outcomes = _outcomes(files, _task(CrashOnWhite(), CSV), workers=2, per_worker=2)
    assert [o.index for o in outcomes] == list(range(len(files)))
    failed = {o.path: o.error for o in outcomes if isinstance(o, jobs.Failure)}
    assert set(failed) == {"b/broken.png", "b/white.png"}
    assert "worker process crashed" in failed["b/white.png"]
    assert "signal 9" in failed["b/white.png"]
    good = [(o.path, o.payload) for o in outcomes if isinstance(o, jobs.ImageResult)]
    plain = _outcomes(files, _task(JOB, CSV), workers=1)
    want = [(o.path, o.payload) for o in plain if o.path not in failed]
    assert good == want  # the same bytes, not only the same names
    assert len(good) == len(files) - 2


def _csv_sink(stream, spec=CSV, job=JOB):
    return spec.format.sink(stream, spec, job.columns)


def test_run_job_streams_header_then_rows_and_counts(folder, tmp_path):
    files = discover([str(folder)])
    out = tmp_path / "out.csv"
    seen = []
    with open(out, "wb") as stream:
        sink = _csv_sink(stream)
        report = runner.run_job(files, _task(JOB, CSV), _SinkConsumer(sink), on_outcome=seen.append)
        sink.close(None)
    lines = out.read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("path,label,width,height,bend1.beta.r00c00,")
    assert len(lines) == 1 + report.processed
    assert report.found == len(files) == len(seen)
    assert [f.path for f in report.failures] == ["b/broken.png"]
    assert not report.ok
    payloads = b"".join(o.payload for o in seen if isinstance(o, jobs.ImageResult))
    assert out.read_bytes().split(b"\n", 1)[1] == payloads


def test_strict_stops_at_the_first_failure(folder):
    files = discover([str(folder)])
    with pytest.raises(runner.StrictStop, match=r"broken\.png"):
        runner.run_job(files, _task(JOB, CSV), runner.TableConsumer(), strict=True)


def test_size_zero_wide_layout_skips_images_whose_grid_differs(folder):
    files = [f for f in discover([str(folder)]) if "broken" not in f.path]
    job = jobs.SoartcJob(
        FeatureSettings(ImageSettings(size=0, patch=8), "datum", ("rot90",), ("beta",), KERNELS)
    )
    stream = io.BytesIO()
    report = runner.run_job(files, _task(job, CSV), _SinkConsumer(_csv_sink(stream, job=job)))
    assert report.failures
    assert all("patch grid" in f.error for f in report.failures)
    header = stream.getvalue().decode().splitlines()[0].split(",")
    assert len(header) == 4 + _grid_cells(files[0])
    long = formats.choose_format("x.csv", layout="long")
    long_report = runner.run_job(
        files, _task(job, long), _SinkConsumer(_csv_sink(io.BytesIO(), long, job))
    )
    assert not long_report.failures


def _grid_cells(file):
    with Image.open(file.source) as im:
        return (im.width // 8) * (im.height // 8)


def test_terminal_runs_collect_rows_without_payloads(folder):
    files = discover([str(folder)])
    table = runner.TableConsumer(keep=5)
    report = runner.run_job(files, _task(JOB, None), table)
    assert len(table.rows) == 5 and table.count == report.processed == len(files) - 1
    assert all(r.payload is None for r in table.rows)
    assert table.rows[0].means.shape == (1, len(JOB.settings.transforms), 2)


# --- run(): checks first, the record ---------------------------------------------------------


def _run(settings, **kwargs):
    return runner.run(JOB, settings, command=["soartc", "test"], **kwargs)


def test_run_writes_the_output_and_its_record(folder, tmp_path):
    out = tmp_path / "out.csv"
    report = _run(RunSettings(InputSettings((str(folder),)), OutputSettings(str(out)), workers=2))
    record = json.loads((tmp_path / "out.csv.meta.json").read_text())
    assert record == report.record
    assert record["counts"] == {"found": 15, "processed": 14, "failed": 1}
    assert record["output"] == {"file": str(out), "format": "csv", "layout": "wide",
                                "precision": 7}  # fmt: skip
    assert out.read_text().count("\n") == 1 + 14


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"workers": 0}, "--workers must be at least 1"),
        ({"resume": True, "path": "-"}, "--resume needs -o FILE"),
        ({"path": "x.txt"}, "cannot tell the format"),
        ({"layout": "long", "path": "x.jsonl"}, "several rows per image"),
        ({"pool": ("mean", "mode"), "layout": "pooled"}, "--pool"),
    ],
)
def test_bad_settings_are_usage_errors_before_any_work(folder, tmp_path, change, message):
    seen = []
    output = {"path": str(tmp_path / "o.csv")}
    run = {k: change.pop(k) for k in list(change) if k == "workers"}
    with pytest.raises(UsageError, match=message):
        settings = RunSettings(
            InputSettings((str(folder),)), OutputSettings(**{**output, **change}), **run
        )
        _run(settings, observer=runner.Observer(on_outcome=seen.append))
    assert seen == []
    assert list(tmp_path.iterdir()) == []


def _children(pid):
    """PIDs whose parent is ``pid`` (read from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry))
    return found


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in (b"Z", b"X")


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads processes from /proc (Linux)")
def test_workers_die_with_a_killed_parent_and_a_later_run_is_not_disturbed(tmp_path):
    import subprocess
    import sys
    import time

    from PIL import Image

    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(5)
    for i in range(400):
        pixels = (rng.random((96, 96)) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(photos / f"{i:03d}.png")
    out = tmp_path / "out.csv"
    command = [sys.executable, "-m", "soartc_cli", "compute", str(photos), "-o", str(out),
               "--size", "96", "--patch", "16", "--transforms", "all", "--metrics", "all",
               "--workers", "2", "-q"]  # fmt: skip
    parent = subprocess.Popen(command, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        workers = []
        while time.monotonic() < deadline and len(workers) < 2:
            workers = _children(parent.pid)
            time.sleep(0.05)
        assert len(workers) == 2, "the run never started its two workers"
        parent.kill()  # SIGKILL of the parent only: it can clean nothing up
        parent.wait(timeout=10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_alive(w) for w in workers):
            time.sleep(0.05)
        assert not any(_alive(w) for w in workers), "a worker outlived its parent"
    finally:
        if parent.poll() is None:
            parent.kill()
    assert not out.exists()  # never a partial output under the real name
    again = subprocess.run(command, capture_output=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert len(out.read_text().splitlines()) == 401


def test_an_image_of_another_grid_is_skipped_with_the_reason_of_its_layout(tmp_path):
    from typer.testing import CliRunner

    from soartc_cli.interfaces.cli import app

    rng = np.random.default_rng(9)
    for i in range(6):
        Image.fromarray((rng.random((64, 64)) * 255).astype(np.uint8)).save(tmp_path / f"a{i}.png")
    Image.fromarray((rng.random((64, 96)) * 255).astype(np.uint8)).save(tmp_path / "b.png")
    common = ["--size", "0", "--patch", "16", "--workers", "1"]
    fit = CliRunner().invoke(app, ["fit", str(tmp_path), "-o", str(tmp_path / "m.npz"), *common])
    assert fit.exit_code == 1  # the model is made of the six; b.png is reported
    assert "skipped b.png: its patch grid 4×6 differs from the first image's 4×4 " in fit.output
    assert "(a unit space compares patch positions: fit images of one size" in fit.output
    wide = CliRunner().invoke(
        app, ["compute", str(tmp_path), "-o", str(tmp_path / "w.csv"), *common]
    )
    assert "(the wide layout needs the same columns in every row;" in wide.output
    assert (tmp_path / "m.npz").is_file()
