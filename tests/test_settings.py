"""soartc_cli.settings: every option validated once, the same for the CLI, the API and a record
read back; and the bugs that options checked in several places caused."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import soartc_cli as soartc
from soartc_cli.core.transforms import KERNELS
from soartc_cli.errors import UsageError
from soartc_cli.imaging.load import largest_size
from soartc_cli.interfaces.cli import app
from soartc_cli.settings.features import AttentionSettings, DemoSettings, FeatureSettings
from soartc_cli.settings.image import ImageSettings
from soartc_cli.settings.inspection import FitSettings, ScoreSettings
from soartc_cli.settings.run import InputSettings, OutputSettings, RunSettings, Shard, usable_cpus
from soartc_cli.settings.values import choice, flag, number, whole

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def photos(tmp_path):
    rng = np.random.default_rng(4)
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(3):
        pixels = (rng.random((40, 48, 3)) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.png")
    return folder


# --- strict values ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("check", "value", "message"),
    [
        (lambda v: whole(v, option="--size"), True, "--size must be a whole number, not True"),
        (lambda v: whole(v, option="--size"), 224.0, "--size must be a whole number, not 224.0"),
        (lambda v: whole(v, option="--size", low=0), -1, "--size must be at least 0, not -1"),
        (lambda v: whole(v, option="--x", high=3), 4, "--x must be at most 3, not 4"),
        (lambda v: flag(v, option="--invert"), 1, "--invert must be true or false, not 1"),
        (lambda v: choice(v, option="--c", choices=("a", "b")), "z", "--c must be one of a, b"),
        (lambda v: number(v, option="--q", low=0, high=1, low_open=True), 0, r"\(0, 1\]"),
        (lambda v: number(v, option="--q"), float("nan"), "--q must be a finite number"),
        (lambda v: number(v, option="--q"), "1", "--q must be a number"),
    ],
)
def test_every_value_check_names_its_option(check, value, message):
    with pytest.raises(UsageError, match=message):
        check(value)


# --- the image settings: one check, whoever asks ---------------------------------------------


def test_the_rgb_size_limit_is_checked_with_the_channels_before_any_work(photos, tmp_path):
    # Bug: compute built its job without the channels' memory budget, so every image was skipped
    # with "internal error: UsageError …" (exit 1) where attention refused the options (exit 2).
    too_big = largest_size("rgb") + 13  # 9472, a multiple of 16
    assert too_big % 16 == 0
    for command in ("compute", "attention"):
        result = invoke(command, photos, "--size", too_big, "--channels", "rgb",
                        "-o", tmp_path / f"{command}.csv")  # fmt: skip
        assert result.exit_code == 2, (command, result.output)
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and "GiB per image" in lines[0], lines
        assert "skipped" not in result.stderr
        assert not (tmp_path / f"{command}.csv").exists()
    with pytest.raises(UsageError, match="GiB per image"):
        soartc.features_table(photos, size=too_big, channels="rgb")


def test_the_readme_gives_the_size_limits_the_code_enforces():
    # Bug: the README said 9458 for rgb, the code took 9459.
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    row = next(line for line in readme.splitlines() if line.startswith("| `--size` |"))
    assert re.findall(r"\d+", row.replace("1 GiB", "")) == [
        str(largest_size("luma")),
        "32",
        str(largest_size("rgb")),
    ]
    ImageSettings(size=largest_size("rgb"), patch=1, channels="rgb")  # the limit itself is taken
    with pytest.raises(UsageError, match="use a size of at most 9459"):
        ImageSettings(size=largest_size("rgb") + 1, patch=1, channels="rgb")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"channels": "rgbx"}, "--channels must be one of luma, rgb, not 'rgbx'"),
        ({"size": 100, "patch": 16}, "patch must divide size: 100 is not a multiple of 16"),
        ({"max_pixels": 0}, "--max-pixels must be at least 1"),
        ({"invert": "yes"}, "--invert must be true or false"),
        ({"patch": 0}, "--patch must be at least 1"),
    ],
)
def test_image_settings_refuse_each_mistake_in_one_line(kwargs, message):
    with pytest.raises(UsageError, match=message) as caught:
        ImageSettings(**kwargs)
    assert "\n" not in str(caught.value)


def test_cli_and_api_give_the_same_message_for_the_same_mistake(photos):
    cli = invoke("compute", photos, "--channels", "rgbx")
    with pytest.raises(UsageError) as api:
        soartc.features_table(photos, channels="rgbx")
    assert cli.exit_code == 2
    assert cli.stderr.strip() == f"soartc: error: {api.value}"


# --- feature settings and records ------------------------------------------------------------


def test_feature_settings_round_trip_through_their_record():
    kernels = {
        "edge": [[-1, 0, 1], [-1, 0, 1], [-1, 0, 1]],
        "dot": [[0, 0, 0], [0, 1, 0], [0, 0, 0]],
    }
    settings = FeatureSettings.parse(
        image=ImageSettings(64, 8, "rgb", True, 1000), datum="dot", kernels=kernels,
        transforms="edge,rot90,dot", metrics="rt,vol",
    )  # fmt: skip
    record = json.loads(json.dumps(settings.to_record()))
    again = FeatureSettings.from_record(record)
    assert again == settings
    assert again.to_record() == settings.to_record()
    assert again.transforms == ("edge", "rot90", "dot") and again.metrics == (
        "beta",
        "noise",
        "vol",
    )
    other = FeatureSettings.from_record({**record, "metrics": ["beta"]})
    assert other != settings


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"size": 224.0}, "--size must be a whole number"),
        ({"invert": 0}, "--invert must be true or false"),
        ({"channels": 3}, "--channels must be one of"),
        ({"metrics": "beta"}, "metrics must be a list"),
        ({"metrics": ["nope"]}, "unknown metrics 'nope'"),
        ({"datum": {"name": "bend1", "kernel": [[1]]}}, "kernel 'bend1' of the record differs"),
        ({"transforms": [{"name": "spin", "rotation": "spin"}]}, "unknown rotation 'spin'"),
    ],
)
def test_a_record_is_read_back_as_strictly_as_options(change, message):
    record = {**FeatureSettings().to_record(), **change}
    with pytest.raises(UsageError, match=message):
        FeatureSettings.from_record(record, source="the record")


def test_a_record_lacking_a_setting_is_one_usage_error():
    record = FeatureSettings().to_record()
    del record["patch"]
    with pytest.raises(UsageError, match=r"^--model: feature settings unreadable \(KeyError"):
        FeatureSettings.from_record(record, source="--model")


def test_attention_and_demo_settings():
    image = ImageSettings(32, 8)
    settings = AttentionSettings.parse(image=image, dim=5, seed=3)
    assert settings.weights.shape == (64, 5)
    assert settings.to_record()["dim"] == 5 and settings == AttentionSettings.parse(
        image=image, dim=5, seed=3
    )
    assert settings != AttentionSettings.parse(image=image, dim=5, seed=4)
    with pytest.raises(UsageError, match="--dim: only with --weights random"):
        AttentionSettings.parse(image=image, weights="identity", dim=4)
    with pytest.raises(UsageError, match="--seed must be between 0 and"):
        AttentionSettings.parse(image=image, seed=-1)
    assert DemoSettings.parse(output="x.json").format == "json"
    with pytest.raises(UsageError, match="--format csv does not match the suffix"):
        DemoSettings.parse(fmt="csv", output="x.json")


# --- run settings ----------------------------------------------------------------------------


def test_run_settings_check_output_record_and_workers(tmp_path):
    with pytest.raises(UsageError, match=r"--record .* is the output file"):
        OutputSettings(str(tmp_path / "o.csv"), record=str(tmp_path / "o.csv"))
    with pytest.raises(UsageError, match="--record: directory of"):
        OutputSettings(str(tmp_path / "o.csv"), record=str(tmp_path / "nope" / "r.json"))
    with pytest.raises(UsageError, match="--resume needs -o FILE"):
        OutputSettings(None, resume=True)
    with pytest.raises(UsageError, match="--workers must be at least 1"):
        RunSettings(InputSettings(("x",)), workers=0)
    with pytest.raises(UsageError, match="give at least one image file or directory"):
        InputSettings(())
    with pytest.raises(UsageError, match="--labels must be one of first, parent, none"):
        InputSettings(("x",), labels="last")
    assert str(Shard.parse(" 2 / 5 ")) == "2/5"
    assert OutputSettings(str(tmp_path / "o.csv.gz")).spec.compression == "gzip"


def test_the_default_worker_count_is_the_cpus_this_process_may_use(monkeypatch):
    # Bug: os.cpu_count() ignored taskset and Slurm's allocation.
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0})
    assert usable_cpus() == 1
    assert RunSettings(InputSettings(("x",))).worker_count == 1
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "3")
    assert usable_cpus() == 3


def test_fit_and_score_settings(tmp_path):
    with pytest.raises(UsageError, match=r"fit needs -o MODEL\.npz"):
        FitSettings(str(tmp_path / "m.txt"))
    with pytest.raises(UsageError, match=r"--quantile must be a number in \(0, 1\]"):
        FitSettings(str(tmp_path / "m.npz"), quantile=1.5)
    with pytest.raises(UsageError, match="--unit-space must be one of position, shared"):
        FitSettings(str(tmp_path / "m.npz"), unit_space="global")
    with pytest.raises(UsageError, match="score needs --model"):
        ScoreSettings(None)
    with pytest.raises(UsageError, match="--threshold must be a finite number greater than 0"):
        ScoreSettings("m.npz", threshold=-1)


def test_fit_where_every_image_fails_says_it_needs_five_good_images(tmp_path):
    # Bug: "features must have at least one patch and one feature: (0, 0, 0)".
    for i in range(6):
        (tmp_path / f"{i}.png").write_bytes(b"not an image")
    result = invoke("fit", tmp_path, "-o", tmp_path / "m.npz", "--workers", 1)
    assert result.exit_code == 2
    assert result.stderr.splitlines()[-1] == (
        "soartc: error: fit needs at least 5 good images, got 0 (6 skipped)"
    )
    assert not (tmp_path / "m.npz").exists()


def test_the_built_in_kernels_are_the_default_bank():
    settings = FeatureSettings()
    assert set(settings.used_kernels) == {"datum", "bend1", "bend2", "bend3", "bend4", "line1",
                                          "line2"}  # fmt: skip
    assert all(settings.kernels[name] is KERNELS[name] for name in KERNELS)
