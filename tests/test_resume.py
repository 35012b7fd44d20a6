"""The --resume journal: frames that survive a kill, a torn tail dropped; the run record's JSON."""

import errno
import io
import json
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow.parquet as pq
import pytest

from soartc_cli.errors import UsageError
from soartc_cli.output import targets
from soartc_cli.output.record import record_json, run_record
from soartc_cli.output.targets import WriteError
from soartc_cli.pipeline import resume
from soartc_cli.pipeline.jobs import Failure, ImageResult
from tests import photoruns
from tests.outhelp import char_device


def _result(index, payload, extra=None):
    means = np.arange(6, dtype=float).reshape(1, 3, 2) / 7
    return ImageResult(index, f"d/{index}.png", "d", 640, 480, (2, 2), payload, means, extra)


OUTCOMES = [
    _result(0, b"d/0.png,d,640,480,1,2\n"),
    Failure(1, "d/1.png", "not an image: \u00e9\n"),
    _result(
        2, ({"path": ["d/2.png"] * 2, "row": [0, 1]}, np.array([[1 / 3, np.nan], [2.0, -0.0]]))
    ),
    _result(3, b"", extra={"score": 1.5}),
]


def _same(a, b):
    assert type(a) is type(b)
    assert (a.index, a.path) == (b.index, b.path)
    if isinstance(a, Failure):
        assert a.error == b.error
        return
    assert (a.label, a.width, a.height, a.grid, a.extra) == (b.label, b.width, b.height, b.grid,
                                                            b.extra)  # fmt: skip
    np.testing.assert_array_equal(a.means, b.means)
    if isinstance(a.payload, bytes):
        assert a.payload == b.payload
    else:
        assert a.payload[0] == b.payload[0]
        assert a.payload[1].tobytes() == b.payload[1].tobytes()  # NaN and -0.0 bit for bit


def test_frames_read_back_as_the_outcomes(tmp_path):
    path = str(tmp_path / "out.csv.partial")
    j = resume.Journal(path)
    for outcome in OUTCOMES:
        j.add(outcome)
    j.close()
    read, length = _read_journal(path)
    assert length == (tmp_path / "out.csv.partial").stat().st_size
    assert len(read) == len(OUTCOMES)
    for a, b in zip(OUTCOMES, read, strict=True):
        _same(a, b)


@pytest.mark.parametrize("cut", [1, 5, 30])
def test_a_torn_tail_is_dropped_and_overwritten_on_resume(tmp_path, cut):
    path = str(tmp_path / "p")
    j = resume.Journal(path)
    for outcome in OUTCOMES[:3]:
        j.add(outcome)
    j.close()
    whole = (tmp_path / "p").read_bytes()
    (tmp_path / "p").write_bytes(whole[:-cut])  # killed in the middle of the third frame
    read, good = _read_journal(path)
    assert [o.index for o in read] == [0, 1]
    j = resume.Journal(path, keep=good)
    j.add(OUTCOMES[2])
    j.add(OUTCOMES[3])
    j.close()
    read, _ = _read_journal(path)
    assert [o.index for o in read] == [0, 1, 2, 3]
    _same(read[2], OUTCOMES[2])


def test_a_file_that_is_not_a_journal_is_a_usage_error(tmp_path):
    (tmp_path / "p").write_bytes(b"path,label\n")
    with pytest.raises(UsageError, match="is not a soartc progress file"):
        _read_journal(str(tmp_path / "p"))


def test_garbage_after_good_frames_is_dropped(tmp_path):
    path = str(tmp_path / "p")
    j = resume.Journal(path)
    j.add(OUTCOMES[0])
    j.close()
    good = (tmp_path / "p").stat().st_size
    with open(path, "ab") as f:
        f.write(b"not a frame header\n")
    assert [o.index for o in _read_journal(path)[0]] == [0]
    assert _read_journal(path)[1] == good


def test_partial_paths():
    assert resume.partial_paths("d/o.csv") == ("d/o.csv.partial", "d/o.csv.partial.meta.json")


def test_run_record_counts_add_up_and_kernels_read_as_matrices():
    record = run_record(
        version="1", command=["soartc", "compute"], settings={"k": [[1, -2], [3, 4.5]]},
        output={"format": "csv"}, found=3, processed=2, failures=[("b.png", "bad")],
        started="s", finished="f", extra={"shard": {"index": 0}},
    )  # fmt: skip
    assert record["counts"] == {"found": 3, "processed": 2, "failed": 1}
    assert record["failures"] == [{"path": "b.png", "error": "bad"}]
    assert record["shard"] == {"index": 0}
    text = record_json(record)
    assert '"k": [\n      [1, -2],\n      [3, 4.5]\n    ]' in text
    assert json.loads(text) == record
    assert text.endswith("}\n")
    assert "é" in record_json({"path": "é"})  # non-ASCII kept


def test_a_full_disk_under_the_journal_is_a_write_error(tmp_path):
    path = str(tmp_path / "out.csv.partial")
    j = resume.Journal(path)

    class Full(io.RawIOBase):
        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    j.file = Full()
    with pytest.raises(WriteError, match=f"^no space left on device writing {path}$"):
        j.add(OUTCOMES[0])


def test_a_journal_that_cannot_be_made_is_a_write_error(tmp_path):
    full = char_device(tmp_path / "full", 7)  # like /dev/full
    with pytest.raises(WriteError, match=f"^no space left on device writing {full}$"):
        resume.Journal(full)


def test_a_journal_appears_whole_with_its_header_or_not_at_all(tmp_path, monkeypatch):
    # Bug: the journal existed before its header was written; a kill in that window left a
    # .partial that --resume refused ("not a soartc progress file").

    path = tmp_path / "out.csv.partial"

    def killed(self, data):
        assert not path.exists()  # while the header is written, no journal is in place
        raise KeyboardInterrupt

    monkeypatch.setattr(targets.AtomicFile, "write", killed)
    with pytest.raises(KeyboardInterrupt):
        resume.Journal(str(path))
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    resume.Journal(str(path)).close()
    assert _read_journal(path) == ([], len(resume._MAGIC))


@pytest.mark.parametrize("where", ["header line", "data"])
def test_a_flipped_byte_ends_the_journal_at_that_frame(tmp_path, where):
    path = tmp_path / "out.csv.partial"
    j = resume.Journal(str(path))
    for outcome in OUTCOMES:
        j.add(outcome)
    j.close()
    data = bytearray(path.read_bytes())
    frames = [resume.encode_outcome(o) for o in OUTCOMES]
    start = len(resume._MAGIC) + len(frames[0])  # the second frame
    offset = start + (frames[1].index(b"\n") + 3 if where == "data" else 2)
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))
    read, length = _read_journal(path)
    assert [o.index for o in read] == [0]  # frames after the damage are done again, not trusted
    assert length == start


def _read_journal(path):
    """Every complete frame of a journal and the byte length they take."""
    path = str(path)
    return list(resume.iter_journal(path)), resume.journal_length(path)


# --- moved from test_issue9_outputs.py ----------------------------------------


@pytest.mark.parametrize("workers", [1, 2])
def test_sigkill_then_resume_gives_the_uninterrupted_csv(tmp_path, many, uninterrupted, workers):
    out = tmp_path / "out.csv"
    args = (
        "compute",
        many,
        "-o",
        out,
        "--resume",
        "--workers",
        workers,
        *photoruns.HEAVY,
        "--quiet",
    )
    kept = photoruns._killed_run(args, f"{out}.partial")
    assert 3 <= kept < 97  # the broken file (second in the list) among them
    assert not out.exists()
    assert (tmp_path / "out.csv.partial.meta.json").exists()
    proc = photoruns.soartc(*args)
    assert proc.returncode == 1, proc.stderr
    assert out.read_bytes() == uninterrupted[0].read_bytes()
    record = json.loads((tmp_path / "out.csv.meta.json").read_text())
    assert record["counts"] == photoruns.COUNTS  # each image once, the kept ones included
    assert [f["path"] for f in record["failures"]] == ["c0/animals/broken.jpg"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv", "out.csv.meta.json"]


def test_sigkill_then_resume_gives_the_uninterrupted_parquet(tmp_path, many, uninterrupted):
    out = tmp_path / "out.parquet"
    args = ("compute", many, "-o", out, "--resume", "--workers", 2, *photoruns.HEAVY, "--quiet")
    assert 3 <= photoruns._killed_run(args, f"{out}.partial") < 97
    proc = photoruns.soartc(*args)
    assert proc.returncode == 1, proc.stderr
    assert pq.read_table(out).equals(pq.read_table(uninterrupted[1]))
    record = json.loads(pq.read_metadata(out).metadata[b"soartc"])
    assert record["counts"] == photoruns.COUNTS
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.parquet", "out.parquet.meta.json"]


def test_sigterm_with_resume_keeps_the_progress_and_resume_finishes_it(
    tmp_path, many, uninterrupted
):
    out = tmp_path / "out.csv"
    args = ("compute", many, "-o", out, "--resume", "--workers", 2, *photoruns.HEAVY)
    cmd = [sys.executable, "-m", "soartc_cli", *map(str, args)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    partial = tmp_path / "out.csv.partial"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if partial.exists() and len(photoruns._read_journal(str(partial))[0]) >= 3:
            break
        time.sleep(0.002)
    assert proc.poll() is None, "the run ended before it could be stopped"
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert stderr.endswith(
        f"images; progress kept in {partial}: run the same command with --resume to go on\n"
    )
    assert partial.exists() and not out.exists()
    proc = photoruns.soartc(*args, "--quiet")
    assert proc.returncode == 1, proc.stderr
    assert out.read_bytes() == uninterrupted[0].read_bytes()
    assert not partial.exists()


def test_resume_refuses_other_settings_or_another_file_list(tmp_path, many):
    out = tmp_path / "out.csv"
    args = ("compute", many, "-o", out, "--resume", "--workers", 1, *photoruns.HEAVY, "--quiet")
    photoruns._killed_run(args, f"{out}.partial")
    partial = (tmp_path / "out.csv.partial").read_bytes()
    result = photoruns.invoke(*args, "--metrics", "rt")
    assert result.exit_code == 2
    assert "--resume: settings 'metrics' differs from the interrupted run's" in result.stderr
    result = photoruns.invoke(*args, "--precision", 5)
    assert result.exit_code == 2
    assert "'precision'" in result.stderr
    first = many / "c0" / photoruns.IMAGES[0]
    moved = tmp_path / "moved.jpg"
    shutil.move(first, moved)  # the second file, already done, is gone from the list
    try:
        result = photoruns.invoke(*args)
    finally:
        shutil.move(moved, first)
    assert result.exit_code == 2
    assert (
        "--resume: the file list differs from the interrupted run's at position 1 "
        "('c0/animals/chelsea.jpg' before, 'c0/astronaut.jpg' now)"
    ) in result.stderr
    assert (tmp_path / "out.csv.partial").read_bytes() == partial  # kept as it was
    assert not out.exists()
