"""Output targets (SPEC §6): atomic files, where -o points, output and record committed together."""

import errno
import gzip
import io
import json
import os
import stat
import subprocess
import sys
import threading

import pytest

from soartc_cli.errors import UsageError
from soartc_cli.output import targets
from tests import photoruns
from tests.outhelp import char_device


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_atomic_file_appears_only_on_commit(tmp_path):
    target = tmp_path / "out.csv"
    f = targets.AtomicFile(target)
    f.write("partial")
    assert not target.exists()
    assert len(list(tmp_path.iterdir())) == 1  # the temporary file, in the same directory
    f.commit()
    assert target.read_text() == "partial"
    assert list(tmp_path.iterdir()) == [target]
    assert oct(target.stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def test_atomic_file_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "out.csv"
    target.write_text("old")
    with pytest.raises(KeyboardInterrupt), targets.AtomicFile(target) as f:
        f.write("new")
        raise KeyboardInterrupt
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]


def test_atomic_file_with_a_name_near_the_limit(tmp_path):
    target = tmp_path / ("x" * 250 + ".csv")
    with targets.AtomicFile(target) as f:
        f.write("ok")
    assert target.read_text() == "ok"


def test_write_text_atomic_and_the_record_path(tmp_path):
    targets.write_text_atomic(tmp_path / "r.json", "{}\n")
    assert (tmp_path / "r.json").read_text() == "{}\n"
    assert targets.record_path("d/out.csv.gz") == "d/out.csv.gz.meta.json"


# --- where -o points ---------------------------------------------------------------------------


def _write(target, data=b"a,b\n1,2\n", record="{}\n"):
    target.stream.write(data)
    target.commit(record if target.record else None, target.record)


def test_a_regular_file_is_replaced_atomically_with_its_record(tmp_path):
    out = tmp_path / "out.csv"
    out.write_text("old")
    target = targets.open_target(str(out))
    assert target.kind == "file"
    target.stream.write(b"new\n")
    assert out.read_text() == "old"  # nothing seen before the commit
    target.commit("{}\n", target.record)
    assert out.read_bytes() == b"new\n"
    assert (tmp_path / "out.csv.meta.json").read_text() == "{}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv", "out.csv.meta.json"]


def test_a_symlink_stays_a_link_and_its_target_gets_the_rows(tmp_path):
    real = tmp_path / "real.csv"
    real.write_text("old")
    link = tmp_path / "link.csv"
    link.symlink_to(real.name)
    target = targets.open_target(str(link))
    _write(target)
    assert link.is_symlink() and os.readlink(link) == "real.csv"
    assert real.read_bytes() == b"a,b\n1,2\n"
    assert (tmp_path / "link.csv.meta.json").exists()  # the record is named after -o


def test_a_dangling_symlink_gets_its_target_made(tmp_path):
    link = tmp_path / "link.csv"
    link.symlink_to("made.csv")
    _write(targets.open_target(str(link)))
    assert link.is_symlink()
    assert (tmp_path / "made.csv").read_bytes() == b"a,b\n1,2\n"


def test_a_device_is_written_in_order_and_gets_no_record(tmp_path):
    null = char_device(tmp_path / "null", 3)
    target = targets.open_target(null)
    assert target.kind == "stream"
    assert target.record is None
    _write(target)
    assert stat.S_ISCHR(os.stat(null).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["null"]


def test_a_record_on_a_device_or_a_link_is_written_where_it_points(tmp_path):
    # --record /dev/null must not replace the device by a regular file (as root it could).
    null = char_device(tmp_path / "null", 3)
    out = tmp_path / "out.csv"
    target = targets.open_target(str(out))
    target.stream.write(b"rows\n")
    target.commit("{}\n", null)
    assert stat.S_ISCHR(os.stat(null).st_mode)
    assert out.read_bytes() == b"rows\n"
    real = tmp_path / "real.json"
    link = tmp_path / "link.json"
    link.symlink_to(real.name)
    targets.write_text_atomic(link, "{}\n")
    assert link.is_symlink() and real.read_text() == "{}\n"
    targets.write_text_atomic(null, "{}\n")
    assert stat.S_ISCHR(os.stat(null).st_mode)
    full = char_device(tmp_path / "full", 7)
    with pytest.raises(targets.WriteError, match=r"no space left on device writing .*full"):
        targets.write_text_atomic(full, "{}\n")


def test_a_fifo_stays_a_fifo_and_its_reader_gets_every_byte(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    target = targets.open_target(str(fifo))
    data = os.urandom(300_000)  # more than a pipe buffer
    _write(target, data)
    reader.join(10)
    assert got == [data]
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe"]


def test_a_directory_or_a_missing_directory_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="is a directory"):
        targets.open_target(str(tmp_path))
    with pytest.raises(UsageError, match="does not exist"):
        targets.open_target(str(tmp_path / "no" / "out.csv"))


def test_stdout_target_writes_to_the_stream_given():
    sink = io.BytesIO()
    target = targets.open_target("-", stdout=sink)
    assert (target.kind, target.record) == ("stdout", None)
    target.stream.write(b"x\n")
    target.commit()
    assert sink.getvalue() == b"x\n"


def test_gzip_is_deterministic_and_decompresses_to_the_rows(tmp_path):
    data = b"path,v\n" + b"".join(b"%d.png,%d\n" % (i, i * i) for i in range(5000))
    blobs = []
    for name in ("a.csv.gz", "b.csv.gz"):
        _write(targets.open_target(str(tmp_path / name), compression="gzip"), data)
        blobs.append((tmp_path / name).read_bytes())
    assert blobs[0] == blobs[1]  # mtime 0 and no file name in the header
    assert gzip.decompress(blobs[0]) == data
    assert blobs[0][4:8] == b"\0\0\0\0"  # MTIME


# --- failures ------------------------------------------------------------------------------------


class _Full(io.RawIOBase):
    """A stream on a full disk."""

    def writable(self):
        return True

    def write(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_is_one_write_error_naming_the_file():
    guarded = targets._Guarded(_Full(), "/data/out.csv")
    with pytest.raises(targets.WriteError) as info:
        guarded.write(b"x")
    assert str(info.value) == "no space left on device writing /data/out.csv"
    eio = targets.write_error(OSError(errno.EIO, "Input/output error"), "f.csv")
    assert str(eio) == "input/output error writing f.csv"


def test_a_closed_stdout_is_a_closed_pipe_and_another_broken_pipe_a_write_error():
    class Closed(io.RawIOBase):
        def write(self, data):
            raise BrokenPipeError(errno.EPIPE, "Broken pipe")

    with pytest.raises(targets.ClosedPipe):
        targets._Guarded(Closed(), "<stdout>", pipe=True).write(b"x")
    with pytest.raises(targets.WriteError, match="broken pipe writing fifo"):
        targets._Guarded(Closed(), "fifo").write(b"x")


def test_a_full_device_as_output_is_a_write_error(tmp_path):
    full = char_device(tmp_path / "full", 7)
    target = targets.open_target(full)
    with pytest.raises(targets.WriteError, match=f"^no space left on device writing {full}$"):
        target.stream.write(b"x" * (1 << 17))  # more than the buffer: the write reaches the device
        target.commit()


def test_a_record_that_cannot_be_written_commits_neither(tmp_path, monkeypatch):
    out = tmp_path / "out.csv"
    out.write_text("old")
    target = targets.open_target(str(out))
    target.stream.write(b"new\n")
    real_write = targets.AtomicFile.write

    def write(self, data):
        if self.path.endswith(".meta.json"):
            raise targets.write_error(OSError(errno.ENOSPC, "full"), self.path)
        return real_write(self, data)

    monkeypatch.setattr(targets.AtomicFile, "write", write)
    with pytest.raises(targets.WriteError, match=r"no space left on device writing .*meta\.json"):
        target.commit("{}\n", target.record)
    assert out.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]  # no .part left


def test_a_failed_output_flush_commits_neither(tmp_path, monkeypatch):
    out = tmp_path / "out.csv"
    target = targets.open_target(str(out))
    target.stream.write(b"rows\n")

    def close():
        raise targets.write_error(OSError(errno.ENOSPC, "full"), str(out))

    monkeypatch.setattr(target.atomic, "close", close)
    with pytest.raises(targets.WriteError):
        target.commit("{}\n", target.record)
    assert list(tmp_path.iterdir()) == []


def test_discard_removes_the_temporary_file(tmp_path):
    target = targets.open_target(str(tmp_path / "out.csv"), compression="gzip")
    target.stream.write(b"rows\n")
    target.discard()
    assert list(tmp_path.iterdir()) == []


# --- moved from test_issue9_outputs.py ----------------------------------------


def test_the_sample_images_are_there():
    assert len(photoruns.IMAGES) == 12


@pytest.mark.parametrize("device", ["/dev/null", "private"])
def test_a_character_device_stays_what_it_was(tmp_path, device):
    if device == "private":
        device = char_device(tmp_path / "null", 3)
    assert stat.S_ISCHR(os.stat(device).st_mode), f"{device} is not a character device to start"
    proc = photoruns.soartc(
        "compute", photoruns.SAMPLES, "-o", device, *photoruns.FAST, "--workers", 2
    )
    assert proc.returncode == 0, proc.stderr
    assert stat.S_ISCHR(os.stat(device).st_mode)
    assert not os.path.exists(device + ".meta.json")
    assert b"12 of 12 images processed" in proc.stderr


def test_compute_into_a_fifo_leaves_it_a_fifo_and_its_reader_gets_every_byte(tmp_path, reference):
    fifo = tmp_path / "rows"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    proc = photoruns.soartc(
        "compute", photoruns.SAMPLES, "-o", fifo, *photoruns.FAST, "--workers", 2
    )
    reader.join(30)
    assert proc.returncode == 0, proc.stderr
    assert got == [reference.read_bytes()]
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rows"]  # no record, no temporary


def test_compute_into_a_symlink_keeps_the_link_and_fills_its_target(tmp_path, reference):
    real = tmp_path / "real.csv"
    real.write_text("old\n")
    link = tmp_path / "link.csv"
    link.symlink_to("real.csv")
    result = photoruns.invoke(
        "compute", photoruns.SAMPLES, "-o", link, *photoruns.FAST, "--workers", 1, "--quiet"
    )
    assert result.exit_code == 0, result.stderr
    assert link.is_symlink() and os.readlink(link) == "real.csv"
    assert real.read_bytes() == reference.read_bytes()
    record = json.loads((tmp_path / "link.csv.meta.json").read_text())
    assert record["counts"] == {"found": 12, "processed": 12, "failed": 0}


def test_dev_stdout_on_a_pipe_is_that_pipe(reference):
    # /dev/stdout is a link into /proc whose realpath ("pipe:[N]") names no file.
    proc = photoruns.soartc(
        "compute",
        photoruns.SAMPLES,
        "-o",
        "/dev/stdout",
        "--record",
        "/dev/stderr",
        *photoruns.FAST,
        "--workers",
        1,
        "--quiet",
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == reference.read_bytes()
    assert json.loads(proc.stderr)["counts"] == {"found": 12, "processed": 12, "failed": 0}


@pytest.mark.parametrize("workers", [1, 2])
def test_a_closed_stdout_pipe_exits_141_quietly(tmp_path, workers):
    err = tmp_path / "err"
    # 256-pixel images make ~0.5 MB of CSV: far more than a pipe holds once head has gone.
    script = (
        f"{sys.executable} -m soartc_cli compute {photoruns.SAMPLES} -o - --size 256 "
        f"--workers {workers} 2>{err} | head -c 10 >{tmp_path / 'head'}; exit ${{PIPESTATUS[0]}}"
    )
    proc = subprocess.run(["bash", "-c", script], timeout=120, check=False)
    assert proc.returncode == 141
    assert err.read_bytes() == b""
    assert (tmp_path / "head").read_bytes() == b"path,label"


def test_a_full_device_is_one_error_line_and_exit_1(tmp_path):
    for device in ("/dev/full", char_device(tmp_path / "full", 7)):
        assert stat.S_ISCHR(os.stat(device).st_mode), f"{device} is not a character device"
        proc = photoruns.soartc(
            "compute", photoruns.SAMPLES, "-o", device, *photoruns.FAST, "--workers", 2, "--quiet"
        )
        assert proc.returncode == 1
        assert proc.stderr.decode() == f"soartc: error: no space left on device writing {device}\n"


def test_a_full_disk_on_a_regular_file_commits_nothing(tmp_path, monkeypatch):
    out = tmp_path / "out.csv"
    out.write_text("old\n")
    real_write = targets._Guarded.write
    written = []

    def write(self, data):
        written.append(len(data))
        if len(written) > 3:  # the header and a few rows went through
            raise targets.write_error(OSError(28, "No space left on device"), self.name)
        return real_write(self, data)

    monkeypatch.setattr(targets._Guarded, "write", write)
    result = photoruns.invoke(
        "compute", photoruns.SAMPLES, "-o", out, *photoruns.FAST, "--workers", 1
    )
    assert result.exit_code == 1
    assert result.stderr.endswith(f"soartc: error: no space left on device writing {out}\n")
    assert "Traceback" not in result.stderr
    assert out.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]  # no .part, no record


def test_a_record_that_fails_leaves_the_output_uncommitted(tmp_path, monkeypatch):
    out = tmp_path / "out.csv"
    out.write_text("old\n")
    real_write = targets.AtomicFile.write

    def write(self, data):
        if self.path.endswith(".meta.json"):
            raise targets.write_error(OSError(28, "No space left on device"), self.path)
        return real_write(self, data)

    monkeypatch.setattr(targets.AtomicFile, "write", write)
    result = photoruns.invoke(
        "compute", photoruns.SAMPLES, "-o", out, *photoruns.FAST, "--workers", 1, "--quiet"
    )
    assert result.exit_code == 1
    assert result.stderr == f"soartc: error: no space left on device writing {out}.meta.json\n"
    assert out.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]


def test_outputs_never_overwrite_inputs(inputs, tmp_path):
    before = photoruns._snapshot(inputs)
    link = tmp_path / "out.csv"
    link.symlink_to(inputs / "a.png")
    hard = tmp_path / "hard.csv"
    os.link(inputs / "a.jpg", hard)
    cases = [
        (("-o", inputs / "a.png"), ""),  # (no image suffix is an output format either)
        (("-o", link), "is one of the input images: refusing to overwrite it"),
        (("-o", hard), "is one of the input images: refusing to overwrite it"),
        (("-o", "-", "--record", inputs / "a.png"), "is one of the input images"),
        (("-o", tmp_path / "r.csv", "--maps", inputs), "would replace the input image"),
    ]
    for args, message in cases:
        result = photoruns.invoke("compute", inputs, *args, *photoruns.FAST, "--workers", 1)
        assert result.exit_code == 2, (args, result.stderr)
        assert message in result.stderr
        assert "skipped" not in result.stderr
        assert result.stdout == ""  # before any work: not even a header
        assert photoruns._snapshot(inputs) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hard.csv", "inp", "out.csv"]


def test_a_record_on_the_output_itself_is_refused(tmp_path):
    out = tmp_path / "out.csv"
    result = photoruns.invoke(
        "compute", photoruns.SAMPLES, "-o", out, "--record", out, *photoruns.FAST, "--workers", 1
    )
    assert result.exit_code == 2
    assert "skipped" not in result.stderr and not out.exists()


def test_resume_into_a_device_is_refused(tmp_path):
    null = char_device(tmp_path / "null", 3)
    result = photoruns.invoke(
        "compute", photoruns.SAMPLES, "-o", null, "--resume", *photoruns.FAST, "--workers", 1
    )
    assert result.exit_code == 2
    assert "--resume needs -o FILE" in result.stderr


def test_a_shard_never_overwrites_an_input_of_another_shard(inputs, tmp_path):
    before = photoruns._snapshot(inputs)
    result = photoruns.invoke(
        "compute",
        inputs,
        "--shard",
        "0/2",
        "--maps",
        inputs,
        "-o",
        tmp_path / "part.csv",
        *photoruns.FAST,
        "--workers",
        1,
    )
    assert photoruns._snapshot(inputs) == before
    assert result.exit_code == 2
    assert "would replace the input image" in result.stderr
