"""The shared options of the fghash commands: help everywhere, one --device vocabulary,
-o/--out for every output path, one comma-list parser, the recorded command line."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from fghash.cli import main
from fghash.cli._options import CommaList, command_line, k_option, out_option
from fghash.errors import FghashError
from fghash.util.lists import parse_list

COMMANDS = sorted(main.commands)
# the name each command's library call speaks: FAISS side "gpu", torch side "cuda"
DEVICE_NAMES = {
    "build-index": "gpu",
    "search": "gpu",
    "serve": "gpu",
    "bench": "gpu",
    "add": "cuda",
    "train": "cuda",
    "encode": "cuda",
    "demo": "cuda",
    "explain": "cuda",
}


def test_the_commands_are_the_expected_ones() -> None:
    want = {"add", "baseline", "bench", "build-index", "demo", "encode", "explain", "info"}
    assert want | {"remove", "search", "serve", "train"} <= set(COMMANDS)


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_has_help(name: str) -> None:
    for flag in ("--help", "-h"):
        r = CliRunner().invoke(main, [name, flag])
        assert r.exit_code == 0, r.output
        assert r.output.startswith("Usage: ") and f" {name} " in r.output.splitlines()[0]
        assert len(r.output.splitlines()) > 3


def test_the_group_help_lists_every_command() -> None:
    r = CliRunner().invoke(main, ["--help"])
    assert r.exit_code == 0
    pipeline = r.output.split("Options:")[0]
    for name in COMMANDS:
        assert f"fghash {name} " in pipeline, name


def _device(name: str) -> click.Option:
    return next(p for p in main.commands[name].params if p.name == "device")  # type: ignore[return-value]


def test_device_commands_are_the_listed_ones() -> None:
    have = {n for n in COMMANDS if any(p.name == "device" for p in main.commands[n].params)}
    assert have == set(DEVICE_NAMES)


@pytest.mark.parametrize("name", sorted(DEVICE_NAMES))
def test_device_accepts_gpu_and_cuda_as_one_meaning(name: str) -> None:
    option = _device(name)
    ctx = click.Context(main.commands[name], info_name=name)
    assert list(option.type.choices) == ["auto", "cpu", "gpu", "cuda"]  # type: ignore[attr-defined]
    for given in ("gpu", "cuda"):
        assert option.process_value(ctx, given) == DEVICE_NAMES[name]
    for given in ("auto", "cpu"):
        assert option.process_value(ctx, given) == given
    with pytest.raises(click.BadParameter):
        option.process_value(ctx, "tpu")


def test_device_spellings_reach_the_library_alike(tmp_path) -> None:
    """Both spellings get past parsing and mean the same: on a machine without a GPU,
    the same one sentence from the library (not click's "Invalid value"), or with one,
    the same index built on the GPU."""
    import numpy as np

    from fghash.codes import Split, make_codes_file, write_codes

    rng = np.random.default_rng(0)
    codes = write_codes(
        tmp_path / "c.h5", make_codes_file(16, Split(rng.integers(0, 256, (50, 2), np.uint8)))
    )
    outputs = []
    for device in ("gpu", "cuda"):
        r = CliRunner().invoke(main, ["build-index", str(codes), "-o", str(tmp_path / device),
                                      "--device", device])  # fmt: skip
        assert "Invalid value" not in r.output and "Traceback" not in r.output
        outputs.append((r.exit_code, r.output))
    assert outputs[0] == outputs[1]
    assert outputs[0][0] in (0, 2)


@pytest.mark.parametrize("name", COMMANDS)
def test_every_output_path_is_dash_o_or_double_dash_out(name: str) -> None:
    for p in main.commands[name].params:
        if isinstance(p, click.Option) and "--out" in p.opts:
            assert "-o" in p.opts, name


def test_k_is_dash_k_or_double_dash_k_everywhere() -> None:
    for name in COMMANDS:
        for p in main.commands[name].params:
            if isinstance(p, click.Option) and p.name == "k":
                assert set(p.opts) == {"-k", "--k"}, name


def test_one_list_parser() -> None:
    assert parse_list(" 1, 10,,100,") == [1, 10, 100]
    assert parse_list("flat, ivf", str) == ["flat", "ivf"]
    with pytest.raises(FghashError, match="comma-separated ids such as 3,17, got 'a,b'"):
        parse_list("a,b", what="ids", example="3,17")
    t = CommaList(int, "ids", "3,17")
    assert t.convert("3,17", None, None) == [3, 17]
    assert t.convert([3], None, None) == [3]
    with pytest.raises(click.BadParameter, match="ids"):
        t.convert("x", None, None)


def test_command_line_records_what_was_given() -> None:
    seen = {}

    @click.command("demo-cmd")
    @click.argument("files", nargs=-1)
    @out_option("where")
    @k_option("how many", type=CommaList(), default=None)
    @click.option("--flag/--no-flag", default=True)
    @click.option("--name", default="x")
    @click.option("--tag", multiple=True)
    def cmd(**kw: object) -> None:
        seen["line"] = command_line()

    args = ["a b.h5", "c.h5", "-o", "out", "-k", "1,10", "--no-flag", "--tag", "t1", "--tag", "t2"]
    r = CliRunner().invoke(cmd, args)
    assert r.exit_code == 0, r.output
    assert seen["line"] == (
        "fghash demo-cmd 'a b.h5' c.h5 --out out --k 1,10 --no-flag --tag t1 --tag t2"
    )
