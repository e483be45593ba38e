"""Options and helpers shared by the fghash commands, spelled the same everywhere."""

from __future__ import annotations

import json
import shlex
from typing import Any

import click

__all__ = [
    "LazyChoice",
    "command_line",
    "device_option",
    "echo_json",
    "flag_option",
    "format_option",
    "int_list",
    "threads_option",
]


def format_option(*choices: str) -> Any:
    """Shared ``--format`` option (``table`` for people, ``json``/``jsonl`` for programs)."""
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(list(choices)),
        default=choices[0],
        show_default=True,
        help="Output format.",
    )


def device_option(choices: tuple[str, ...] = ("auto", "cpu", "gpu")) -> Any:
    """Shared ``--device`` option."""
    return click.option(
        "--device",
        type=click.Choice(list(choices)),
        default="auto",
        show_default=True,
        help="Where to run: auto picks the GPU when one is usable and says so.",
    )


def threads_option() -> Any:
    """Shared ``--threads`` option of the commands that run torch on the CPU."""
    return click.option(
        "--threads",
        type=click.IntRange(min=1),
        default=None,
        help="CPU threads for torch (and FAISS) [default: OMP_NUM_THREADS if set, else the cores "
        "this process may use, fewer while other processes keep some of them busy].",
    )


def echo_json(obj: Any) -> None:
    """Print one JSON object on one line."""
    click.echo(json.dumps(obj, default=str))


class LazyChoice(click.Choice):  # type: ignore[type-arg]
    """A click.Choice whose choices are computed on first use, so that loading the CLI
    (``fghash --help``) does not import what computes them (numpy, the baselines)."""

    def __init__(self, load: Any, case_sensitive: bool = True) -> None:
        self._load, self._choices = load, None
        super().__init__([], case_sensitive=case_sensitive)

    @property  # type: ignore[override]
    def choices(self) -> Any:
        if self._choices is None:
            self._choices = tuple(self._load())
        return self._choices

    @choices.setter
    def choices(self, value: Any) -> None:
        pass


def _dataset_names() -> list[str]:
    from fghash.data import list_datasets

    return list_datasets()


def flag_option(name: str, help: str) -> Any:
    return click.option(f"--{name}/--no-{name}", default=None, help=help)


def int_list(ctx: click.Context, param: click.Parameter, value: str | None) -> list[int] | None:
    if value is None:
        return None
    try:
        return [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(
            f"expected comma-separated integers such as 1,10,100, got {value!r}."
        ) from None


def command_line(name: str, args: list[str]) -> str:
    """The current command as a user would type it: arguments, then non-default options."""
    ctx = click.get_current_context()
    parts = ["fghash", name, *args]
    for p in ctx.command.params:
        v = ctx.params.get(p.name or "")
        if not isinstance(p, click.Option) or v in (None, False, p.default):
            continue
        flag = max(p.opts, key=len)
        parts += [flag] if v is True else [flag, str(v)]
    return shlex.join(parts)
