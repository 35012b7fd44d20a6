"""soartc_cli.imaging.discover: walking, order, paths and labels, stdin, shards (SPEC §2, §8)."""

from __future__ import annotations

import io
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from soartc_cli.errors import UsageError
from soartc_cli.imaging.discover import ImageFile, discover, display_path, parse_shard, shard


def touch(root, relative: str, data: bytes = b"x") -> str:
    path = os.path.join(root, *relative.split("/"))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as file:
        file.write(data)
    return path


@pytest.fixture
def tree(tmp_path) -> str:
    """A small ImageFolder-like tree with noise around the images."""
    root = str(tmp_path / "data")
    for name in [
        "a.png",
        "b.JPG",
        "notes.txt",
        "cats/c1.png",
        "cats/sub/deep.gif",
        "dogs/d1.jpeg",
        "dogs/readme.md",
        ".hidden/x.png",
        "cats/.secret.png",
        "cats/.cache/y.png",
    ]:
        touch(root, name)
    return root


def paths(files: list[ImageFile]) -> list[str]:
    return [file.path for file in files]


def test_recursive_walk_paths_labels_sources(tree):
    files = discover([tree])
    assert paths(files) == [
        "a.png",
        "b.JPG",
        "cats/c1.png",
        "cats/sub/deep.gif",
        "dogs/d1.jpeg",
    ]
    assert [file.label for file in files] == ["", "", "cats", "cats", "dogs"]
    for file in files:
        assert file.source == os.path.join(tree, *file.path.split("/"))
        assert os.path.isfile(file.source)


def test_no_recursive(tree):
    assert paths(discover([tree], recursive=False)) == ["a.png", "b.JPG"]


def test_every_extension_in_any_case(tmp_path):
    names = ["a.png", "b.jpg", "c.jpeg", "d.bmp", "e.gif", "f.tif", "g.tiff", "h.webp"]
    names += [name.upper() for name in names] + ["i.JpEg", "j.png.txt", "k.pngx", "png"]
    for name in names:
        touch(tmp_path, name)
    found = paths(discover([str(tmp_path)]))
    assert found == sorted(name for name in names if name[0] not in "jkp")
    assert len(found) == 17


def test_hidden_files_and_directories_skipped(tree):
    found = paths(discover([tree]))
    assert not [path for path in found if "/." in f"/{path}"]


def test_hidden_directory_named_directly_is_walked(tree):
    assert paths(discover([os.path.join(tree, ".hidden")])) == ["x.png"]


def test_order_is_by_string_not_by_walk(tmp_path):
    # Code points: "B" < " " order inside names, and "a b/" sorts before "a-b", "a.", "a/".
    for name in ["a/x.png", "a.png", "a-b.png", "a b/x.png", "B.png", "Z/z.png", "é.png"]:
        touch(tmp_path, name)
    assert paths(discover([str(tmp_path)])) == [
        "B.png",
        "Z/z.png",
        "a b/x.png",
        "a-b.png",
        "a.png",
        "a/x.png",
        "é.png",
    ]


def test_inputs_keep_their_order_each_sorted(tmp_path):
    first, second = str(tmp_path / "one"), str(tmp_path / "two")
    for name in ["z.png", "a.png"]:
        touch(first, name)
        touch(second, name)
    lone = touch(tmp_path, "lone.png")
    files = discover([second, lone, first])
    # two input directories: paths below their deepest common parent (SPEC §2.2)
    assert paths(files) == ["two/a.png", "two/z.png", lone, "one/a.png", "one/z.png"]
    assert [os.path.dirname(file.source) for file in files] == [
        second,
        second,
        str(tmp_path),
        first,
        first,
    ]


def test_symlink_loop_terminates(tree):
    os.symlink(tree, os.path.join(tree, "cats", "loop"))
    os.symlink("..", os.path.join(tree, "dogs", "up"))
    found = paths(discover([tree]))
    assert found == ["a.png", "b.JPG", "cats/c1.png", "cats/sub/deep.gif", "dogs/d1.jpeg"]


def test_symlinks_followed(tree, tmp_path):
    outside = str(tmp_path / "elsewhere")
    touch(outside, "o.png")
    os.symlink(outside, os.path.join(tree, "linked"))
    os.symlink(os.path.join(tree, "dogs"), os.path.join(tree, "puppies"))
    os.symlink(os.path.join(outside, "o.png"), os.path.join(tree, "alias.png"))
    files = discover([tree])
    found = paths(files)
    assert "linked/o.png" in found and "alias.png" in found
    # The same directory under two names is listed under both: each name is a label.
    assert "dogs/d1.jpeg" in found and "puppies/d1.jpeg" in found
    assert {file.label for file in files if file.path.startswith("puppies/")} == {"puppies"}


def test_broken_symlink_with_image_name_is_listed(tree):
    os.symlink("nowhere.png", os.path.join(tree, "cats", "gone.png"))
    os.symlink("nowhere.txt", os.path.join(tree, "cats", "gone.txt"))
    found = paths(discover([tree]))
    assert "cats/gone.png" in found
    assert "cats/gone.txt" not in found


def test_fifo_is_skipped(tree):
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs here")
    os.mkfifo(os.path.join(tree, "pipe.png"))
    assert "pipe.png" not in paths(discover([tree]))


def test_files_named_directly(tree, monkeypatch):
    monkeypatch.chdir(tree)
    files = discover(["cats/c1.png", "notes.txt", "./dogs/d1.jpeg", ".hidden/x.png"])
    assert paths(files) == ["cats/c1.png", "notes.txt", "./dogs/d1.jpeg", ".hidden/x.png"]
    assert [file.label for file in files] == ["cats", "", "dogs", ".hidden"]
    absolute = os.path.join(tree, "cats", "c1.png")
    above = os.path.join("..", "data", "a.png")
    # labels below the deepest common parent of the files named (here the tree itself)
    assert [(f.path, f.label) for f in discover([absolute, above])] == [
        (absolute, "cats"),
        (above, ""),
    ]


def test_missing_input_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match=r"^input not found: .*nope$"):
        discover([str(tmp_path / "nope")])


def test_unreadable_directory(tree, monkeypatch):
    real_scandir = os.scandir
    blocked = os.path.join(tree, "dogs")

    def scandir(path):
        if os.fspath(path) == blocked:
            raise PermissionError(13, "Permission denied", path)
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(UsageError, match=r"^/.*/dogs: cannot read directory: Permission denied$"):
        discover([tree])
    problems = []
    found = paths(discover([tree], on_error=lambda path, reason: problems.append((path, reason))))
    assert found == ["a.png", "b.JPG", "cats/c1.png", "cats/sub/deep.gif"]
    assert problems == [("dogs", "cannot read directory: Permission denied")]
    with pytest.raises(UsageError, match=r"cannot read input directory .*dogs: Permission denied"):
        discover([blocked])


def test_stdin_lists_paths(tree, monkeypatch):
    monkeypatch.chdir(tree)
    stdin = io.StringIO("a.png\n\n   \ncats\r\nnotes.txt")
    files = discover(["-"], stdin=stdin)
    # "cats" names a directory: walked, with paths relative to it.
    assert paths(files) == ["a.png", "c1.png", "sub/deep.gif", "notes.txt"]
    assert [file.label for file in files] == ["", "", "sub", ""]


def test_stdin_between_other_inputs(tree, monkeypatch):
    monkeypatch.chdir(tree)
    files = discover(["b.JPG", "-", "a.png"], stdin=io.StringIO("dogs/d1.jpeg\n"))
    assert paths(files) == ["b.JPG", "dogs/d1.jpeg", "a.png"]


def test_stdin_missing_path_is_a_usage_error(tree, monkeypatch):
    monkeypatch.chdir(tree)
    with pytest.raises(UsageError, match=r"input not found: ghost\.png"):
        discover(["-"], stdin=io.StringIO("a.png\nghost.png\n"))


def test_stdin_bytes_and_text_wrapper_keep_non_utf8_names(tmp_path, monkeypatch):
    raw = os.path.join(os.fsencode(tmp_path), b"bad\xff.png")
    with open(raw, "wb") as file:
        file.write(b"x")
    monkeypatch.chdir(tmp_path)
    for stream in (
        io.BytesIO(b"bad\xff.png\n"),
        io.TextIOWrapper(io.BytesIO(b"bad\xff.png\n"), encoding="utf-8"),  # like sys.stdin
    ):
        (file,) = discover(["-"], stdin=stream)
        assert file.path == "bad\\xff.png"
        assert os.path.exists(file.source)


def test_non_utf8_file_name(tmp_path):
    folder = os.path.join(os.fsencode(tmp_path), b"caf\xe9")
    os.mkdir(folder)
    with open(os.path.join(folder, b"bad\xff.png"), "wb") as file:
        file.write(b"x")
    (found,) = discover([str(tmp_path)])
    assert found.path == "caf\\xe9/bad\\xff.png"
    assert found.label == "caf\\xe9"
    assert os.fsencode(found.source) == os.path.join(folder, b"bad\xff.png")
    assert os.path.isfile(found.source)
    found.path.encode("utf-8")  # printable, writable to a UTF-8 CSV


def test_display_path():
    assert display_path("plain/name.png") == "plain/name.png"
    assert display_path("猫/ねこ.png") == "猫/ねこ.png"
    assert display_path(os.fsdecode(b"x\xff\xfe.png")) == "x\\xff\\xfe.png"


AWKWARD = ["猫.png", "a,b.png", 'say "hi".png', "line\nbreak.png", "=cmd.png", "tab\there.png"]


def test_awkward_names_preserved(tmp_path):
    for name in AWKWARD:
        touch(tmp_path, f"クラス/{name}")
    files = discover([str(tmp_path)])
    assert paths(files) == sorted(f"クラス/{name}" for name in AWKWARD)
    assert {file.label for file in files} == {"クラス"}
    assert all(os.path.isfile(file.source) for file in files)


def test_no_stat_per_file(tmp_path, monkeypatch):
    for index in range(300):
        touch(tmp_path, f"class{index % 3}/img{index:04d}.png")
    calls = []
    real_stat = os.stat

    def counting_stat(*args, **kwargs):
        calls.append(args[0])
        return real_stat(*args, **kwargs)

    monkeypatch.setattr(os, "stat", counting_stat)
    files = discover([str(tmp_path)])
    assert len(files) == 300
    assert len(calls) <= 2  # the input itself: directory entries give the rest


# --- shards ------------------------------------------------------------------------------------


def fake_files(count: int) -> list[ImageFile]:
    return [ImageFile(source=f"/d/{i}.png", path=f"{i}.png", label="") for i in range(count)]


@given(n=st.integers(0, 60), count=st.integers(1, 12))
def test_shards_concatenate_to_the_whole(n, count):
    files = fake_files(n)
    slices = [shard(files, index=index, count=count) for index in range(count)]
    assert [file for part in slices for file in part] == files
    for index, part in enumerate(slices):
        assert part == files[index * n // count : (index + 1) * n // count]
    sizes = [len(part) for part in slices]
    assert max(sizes) - min(sizes) <= 1


def test_shard_formula_example():
    files = fake_files(10)
    # floor(I·10/3): 0, 3, 6, 10
    assert [len(shard(files, index=i, count=3)) for i in range(3)] == [3, 3, 4]
    assert shard(files, index=2, count=3)[0].path == "6.png"


@pytest.mark.parametrize(
    ("index", "count", "message"),
    [
        (-1, 4, "shard index must be in 0…3 for 4 shards, got -1"),
        (4, 4, "shard index must be in 0…3 for 4 shards, got 4"),
        (0, 0, "shard count must be at least 1, got 0"),
    ],
)
def test_shard_errors(index, count, message):
    with pytest.raises(UsageError, match=message):
        shard(fake_files(5), index=index, count=count)


@pytest.mark.parametrize(
    ("text", "expected"), [("0/4", (0, 4)), ("3/4", (3, 4)), (" 1 / 2 ", (1, 2)), ("0/1", (0, 1))]
)
def test_parse_shard(text, expected):
    assert parse_shard(text) == expected


@pytest.mark.parametrize("text", ["", "1", "a/b", "-1/4", "1/2/3", "1.0/2", "１/２", "1/"])
def test_parse_shard_bad_text(text):
    with pytest.raises(UsageError, match="shard must be I/N with 0 ≤ I < N"):
        parse_shard(text)


@pytest.mark.parametrize(
    ("text", "message"),
    [("4/4", "got 4"), ("7/3", "got 7"), ("0/0", "shard count must be at least 1")],
)
def test_parse_shard_out_of_range(text, message):
    with pytest.raises(UsageError, match=message):
        parse_shard(text)


# --- hostile trees and path lists (issue 13) ---------------------------------------------------


def make_deep_file(root: str, total: int, name: str = "deep.png", data: bytes = b"x") -> str:
    """A file at ``root/ddd…/ddd…/…/name``, a path of ``total`` bytes or more.

    Built with ``mkdir``/``openat`` relative to the previous directory's descriptor, since no
    single call may name a path longer than PATH_MAX (4096 bytes); each component is 200 bytes.
    """
    path = os.fsencode(root)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        while len(path) + 1 + len(name) < total:
            step = b"d" * min(200, max(1, total - len(path) - 2 - len(name)))
            os.mkdir(step, dir_fd=fd)
            following = os.open(step, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = following
            path += b"/" + step
        out = os.open(name, os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(out, data)
        os.close(out)
    finally:
        os.close(fd)
    return os.fsdecode(path + b"/" + os.fsencode(name))


needs_openat = pytest.mark.skipif(
    os.open not in os.supports_dir_fd or os.scandir not in os.supports_fd,
    reason="needs openat and scandir of a descriptor (POSIX)",
)


@needs_openat
def test_a_file_past_path_max_is_listed_not_lost(tmp_path):
    root = str(tmp_path / "root")
    touch(root, "short.png")
    deep = make_deep_file(root, 4223)
    assert len(os.fsencode(deep)) >= 4223
    with pytest.raises(OSError, match="too long"):
        os.stat(deep)  # the system refuses the whole path: the walk must not need it
    files = discover([root])
    assert paths(files) == [os.path.relpath(deep, root), "short.png"]
    assert files[0].source == deep
    assert files[0].label == "d" * 200


@needs_openat
def test_a_directory_past_path_max_is_walked_and_can_be_named(tmp_path):
    root = str(tmp_path / "root")
    os.mkdir(root)
    deep = make_deep_file(root, 9000, name="x.png")
    # A deeper file again, beside it, makes the last directory's path itself too long to open.
    parent = os.path.dirname(deep)
    assert len(os.fsencode(parent)) > 4096
    assert paths(discover([root])) == [os.path.relpath(deep, root)]
    # The too-long directory named directly (as a stdin line would) is walked too.
    (file,) = discover(["-"], stdin=io.StringIO(parent + "\n"))
    assert file.path == "x.png" and file.source == deep


def test_a_nul_byte_in_a_stdin_path_is_reported_and_the_rest_kept(tree, monkeypatch):
    monkeypatch.chdir(tree)
    problems = []
    stdin = io.BytesIO(b"a.png\ncats/c\x001.png\nb.JPG\n")
    files = discover(["-"], stdin=stdin, on_error=lambda *problem: problems.append(problem))
    assert paths(files) == ["a.png", "b.JPG"]
    assert problems == [
        ("cats/c\\x001.png", "path holds a NUL byte (no file can have such a name)")
    ]
    with pytest.raises(UsageError, match=r"^cats/c\\x001\.png: path holds a NUL byte"):
        discover(["-"], stdin=io.BytesIO(b"a.png\ncats/c\x001.png\n"))


def test_a_255_byte_name_a_directory_named_like_an_image_and_a_deep_tree(tmp_path):
    root = str(tmp_path / "root")
    long_name = "n" * 251 + ".png"
    assert len(long_name) == 255
    touch(root, long_name)
    touch(root, "folder.png/inside.jpg")  # a directory called folder.png: walked, not an image
    deep = "/".join(["z"] * 400)  # 400 levels: the walk keeps a stack, not recursion
    touch(root, f"{deep}/bottom.gif")
    found = paths(discover([root]))
    assert found == ["folder.png/inside.jpg", long_name, f"{deep}/bottom.gif"]
    assert paths(discover([root], recursive=False)) == [long_name]


def test_a_looping_link_with_an_image_name_is_listed_and_a_self_loop_ends(tmp_path):
    root = str(tmp_path / "root")
    touch(root, "a.png")
    os.symlink("loop.png", os.path.join(root, "loop.png"))  # ELOOP when followed
    os.symlink(".", os.path.join(root, "self"))
    found = paths(discover([root]))
    assert found == ["a.png", "loop.png"]


def test_a_path_named_directly_that_cannot_be_examined_is_listed(tmp_path):
    os.symlink("loop.png", tmp_path / "loop.png")
    (file,) = discover([str(tmp_path / "loop.png")])
    assert file.source == str(tmp_path / "loop.png")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0/0", "shard count must be at least 1, got 0"),
        ("3/2", "shard index must be in 0…1 for 2 shards, got 3"),
        ("-1/2", "shard must be I/N"),
        ("1/2/3", "shard must be I/N"),
        ("a/b", "shard must be I/N"),
        (f"0/{10**30}", "shard numbers must be at most 1000000000"),
        (f"{10**30}/{10**31}", "shard numbers must be at most 1000000000"),
        ("0/" + "9" * 5000, "shard numbers must be at most 1000000000"),  # over Python's int limit
        ("0/1000000001", "shard numbers must be at most 1000000000"),
    ],
)
def test_parse_shard_refuses_hostile_text_in_one_line(text, message):
    with pytest.raises(UsageError, match=message) as caught:
        parse_shard(text)
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 200


def test_more_shards_than_files_gives_empty_shards():
    assert parse_shard("0/1000000000") == (0, 10**9)
    assert parse_shard("00007/0008") == (7, 8)
    files = fake_files(3)
    slices = [shard(files, index=index, count=8) for index in range(8)]
    assert [len(part) for part in slices] == [0, 0, 1, 0, 0, 1, 0, 1]
    assert shard(files, index=10**9 - 1, count=10**9) == files[2:]


@needs_openat
def test_cli_counts_add_up_for_an_image_past_path_max(tmp_path):
    import json
    import subprocess
    import sys

    from PIL import Image

    root = tmp_path / "root"
    root.mkdir()
    image = io.BytesIO()
    Image.new("L", (32, 32), 90).save(image, "PNG")
    (root / "short.png").write_bytes(image.getvalue())
    deep = make_deep_file(str(root), 4223, data=image.getvalue())
    out = tmp_path / "out.csv"
    cmd = [sys.executable, "-m", "soartc_cli", "compute", str(root), "-o", str(out),
           "--size", "32", "--patch", "16", "--workers", "1"]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    shown = os.path.relpath(deep, root)
    assert f"soartc: skipped {shown}: " in result.stderr
    record = json.loads((tmp_path / "out.csv.meta.json").read_text())
    counts = record["counts"]
    assert counts == {"found": 2, "processed": 1, "failed": 1}
    assert [failure["path"] for failure in record["failures"]] == [shown]
    assert "too long" in record["failures"][0]["error"]
    assert out.read_text().count("\n") == 2  # the header and short.png


def _stdin_run(tmp_path, lines: bytes):
    import json
    import subprocess
    import sys

    from PIL import Image

    Image.new("L", (32, 32), 90).save(tmp_path / "good.png")
    out = tmp_path / "out.csv"
    cmd = [sys.executable, "-m", "soartc_cli", "compute", "-", "-o", str(out),
           "--size", "32", "--patch", "16", "--workers", "1"]  # fmt: skip
    result = subprocess.run(cmd, input=lines, capture_output=True, timeout=60, cwd=tmp_path)
    record = json.loads((tmp_path / "out.csv.meta.json").read_text())
    return result, record, out


def test_cli_skips_a_stdin_path_with_a_nul_byte_and_keeps_the_other_rows(tmp_path):
    result, record, out = _stdin_run(tmp_path, b"good.png\nbad\x00.png\n")
    stderr = result.stderr.decode()
    assert result.returncode == 1, stderr
    assert "Traceback" not in stderr and "internal error" not in stderr
    assert "soartc: skipped bad\\\\x00.png: path holds a NUL byte" in stderr
    assert out.read_text().splitlines()[1].startswith("good.png,")
    assert record["counts"]["processed"] == 1 and record["counts"]["failed"] == 1
    assert record["failures"][0]["path"] == "bad\\x00.png"


def test_cli_counts_add_up_when_discovery_reports_a_failure(tmp_path):
    _, record, _ = _stdin_run(tmp_path, b"good.png\nbad\x00.png\n")
    counts = record["counts"]
    assert counts["found"] == counts["processed"] + counts["failed"]


# --- SPEC §2.2, sentence by sentence ---------------------------------------------------------


def _rows(files):
    return [(f.path, f.label) for f in files]


def test_one_directory_paths_are_relative_to_it_and_labels_its_first_directory(tmp_path):
    for name in ["cats/a.png", "cats/deep/b.png", "c.png"]:
        touch(tmp_path / "photos", name)
    assert _rows(discover([str(tmp_path / "photos")])) == [
        ("c.png", ""),  # an image directly in the root has the empty label
        ("cats/a.png", "cats"),
        ("cats/deep/b.png", "cats"),
    ]


def test_several_directories_are_relative_to_their_deepest_common_parent(tmp_path):
    # `two/cats two/dogs` → cats/a.png, dogs/a.png: no two rows share a path by accident.
    touch(tmp_path / "two" / "cats", "a.png")
    touch(tmp_path / "two" / "dogs", "a.png")
    files = discover([str(tmp_path / "two" / "cats"), str(tmp_path / "two" / "dogs")])
    assert _rows(files) == [("cats/a.png", "cats"), ("dogs/a.png", "dogs")]


def test_files_from_stdin_are_labelled_below_their_deepest_common_parent(tmp_path, monkeypatch):
    # `find photos -name '*.png' | soartc compute -` labels photos/cats/x.png as cats.
    for name in ["photos/cats/x.png", "photos/dogs/y.png", "photos/dogs/deep/z.png"]:
        touch(tmp_path, name)
    monkeypatch.chdir(tmp_path)
    listed = io.StringIO("photos/cats/x.png\nphotos/dogs/y.png\nphotos/dogs/deep/z.png\n")
    files = discover(["-"], stdin=listed)
    assert _rows(files) == [
        ("photos/cats/x.png", "cats"),  # paths as given
        ("photos/dogs/y.png", "dogs"),
        ("photos/dogs/deep/z.png", "dogs"),
    ]


def test_a_single_file_named_directly_is_in_its_own_root(tmp_path, monkeypatch):
    touch(tmp_path, "cats/a.png")
    monkeypatch.chdir(tmp_path)
    assert _rows(discover(["cats/a.png"])) == [("cats/a.png", "")]


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ("first", ["", "train", "train", "test"]),
        ("parent", ["", "cats", "deep", "dogs"]),
        ("none", ["", "", "", ""]),
    ],
)
def test_labels_first_parent_and_none(tmp_path, labels, expected):
    for name in ["root.png", "train/cats/a.png", "train/cats/deep/b.png", "test/dogs/c.png"]:
        touch(tmp_path / "data", name)
    files = discover([str(tmp_path / "data")], labels=labels)
    by_path = {f.path: f.label for f in files}
    order = ["root.png", "train/cats/a.png", "train/cats/deep/b.png", "test/dogs/c.png"]
    assert sorted(by_path) == sorted(order)
    assert [by_path[p] for p in order] == expected


def test_an_unknown_labels_mode_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="labels must be one of first, parent, none"):
        discover([str(tmp_path)], labels="deepest")
