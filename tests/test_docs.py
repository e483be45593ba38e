"""The documentation cannot rot: every ``fghash`` command line in README.md and docs/*.md
is checked against the real command line, and the cheap ones run.

Extraction: fenced shell blocks are read as a shell would (``\\`` continuations, ``$ ``
prompts, ``#`` comments, several commands joined by ``&&``, ``;``, ``|`` or ``&``,
redirections dropped); a simple command invokes fghash when a word of it is ``fghash``
(``fghash demo``, ``/usr/bin/time -v fghash bench …``) or it runs ``-m fghash``
(``python -m fghash``, ``torchrun … -m fghash``). In unlabelled blocks (program output,
folder trees) only lines that start with ``fghash `` or ``$ `` count.

Two checks:

* every line, always: the command name must exist and click must accept every option and
  argument, parsed by the real command with its file-existence checks switched off (the
  paths of the docs' examples need not exist here). A renamed or removed command,
  option or choice fails it.
* the lines on the demo's folder (``fghash-demo/…``) whose command is cheap (info,
  build-index, search, add, bench, explain, baseline, encode) run through click's
  CliRunner, in the order of their page, in a folder holding a ``fghash demo --quick``
  (4 classes, 48 images, 12 bits), and must exit 0. Training (``fghash train``, minutes
  to hours on a real data set) and the full demo (minutes) are parse-checked only.

``python -m bench.scripts.NAME`` lines must name a module that exists, and Python blocks
must compile.
"""

from __future__ import annotations

import copy
import glob
import importlib.util
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from fghash.cli import main

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL = {"bash", "sh", "shell", "console"}
CONTROL = {"&&", "||", ";", "|", "&"}
REDIRECT = re.compile(r"^\d*(>|>>|<|>&)$")
RUN = {"info", "build-index", "search", "add", "bench", "explain", "baseline", "encode"}
DEMO = "fghash-demo/"
WRAPPERS = {"time", "timeout", "nice"}  # programs that run the command after them
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


@dataclass(frozen=True)
class Line:
    page: str
    lineno: int
    argv: tuple[str, ...]  # the arguments after ``fghash``

    def __str__(self) -> str:
        return f"{self.page}:{self.lineno}: fghash {shlex.join(self.argv)}"


def _blocks(text: str) -> Iterator[tuple[str, int, list[str]]]:
    """(language, line number of the first line, lines) of each fenced block."""
    lang, start, lines = None, 0, []
    for n, raw in enumerate(text.splitlines(), 1):
        if raw.lstrip().startswith("```"):
            if lang is None:
                lang, start, lines = raw.strip()[3:].strip().lower(), n + 1, []
            else:
                yield lang, start, lines
                lang = None
        elif lang is not None:
            lines.append(raw)


def _logical_lines(start: int, lines: list[str]) -> Iterator[tuple[int, str]]:
    """Join ``\\`` continuations and strip ``$ `` prompts."""
    buf, first = "", start
    for n, raw in enumerate(lines, start):
        line = raw.rstrip()
        if not buf:
            first = n
            line = line.lstrip()
            line = line[2:] if line.startswith("$ ") else line
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        yield first, buf + line
        buf = ""
    if buf:
        yield first, buf


def _simple_commands(command: str) -> Iterator[list[str]]:
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    words: list[str] = []
    tokens = list(lexer)
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok in CONTROL:
            yield words
            words = []
        elif REDIRECT.match(tok):
            i += 1  # and its target
        else:
            words.append(tok)
        i += 1
    yield words


def _fghash_argv(words: list[str]) -> list[str] | None:
    """The arguments after ``fghash`` when ``words`` runs fghash, else None."""
    for i, w in enumerate(words[:-1]):
        if w == "-m" and words[i + 1] == "fghash":
            return words[i + 2 :]
    rest = list(words)
    while rest and (ASSIGNMENT.match(rest[0]) or Path(rest[0]).name in WRAPPERS):
        rest.pop(0)
        while rest and (rest[0].startswith("-") or rest[0].isdigit()):
            rest.pop(0)  # the wrapper's options (time -v, timeout 600)
    return rest[1:] if rest and rest[0] == "fghash" else None


def _shell_lines(page: Path) -> Iterator[tuple[int, list[str]]]:
    """(line number, words) of every simple command in the page's fenced blocks."""
    for lang, start, lines in _blocks(page.read_text(encoding="utf-8")):
        if lang not in SHELL and lang != "":
            continue
        for n, line in _logical_lines(start, lines):
            if lang == "" and not line.startswith(("fghash ", "$ ")):
                continue  # program output and folder trees
            for words in _simple_commands(line):
                if words:
                    yield n, words


def doc_lines(page: Path) -> list[Line]:
    out = []
    for n, words in _shell_lines(page):
        argv = _fghash_argv(words)
        if argv is not None:
            out.append(Line(str(page.relative_to(ROOT)), n, tuple(argv)))
    return out


ALL = [line for page in PAGES for line in doc_lines(page)]


def _without_existence_checks(cmd: click.Command) -> click.Command:
    """A copy of ``cmd`` whose path parameters do not require the path to exist."""
    copied = copy.copy(cmd)
    params = []
    for p in cmd.params:
        q = copy.copy(p)
        if isinstance(p.type, click.Path) and p.type.exists:
            q.type = copy.copy(p.type)
            q.type.exists = False  # type: ignore[attr-defined]
        params.append(q)
    copied.params = params
    return copied


def _split_group_options(argv: tuple[str, ...]) -> tuple[list[str], str, list[str]]:
    group_opts = {o for p in main.params for o in p.opts}
    i = 0
    while i < len(argv) and argv[i] in group_opts:
        i += 1
    assert i < len(argv), "no command after the group options"
    return list(argv[:i]), argv[i], list(argv[i + 1 :])


def parse(line: Line) -> None:
    group_args, name, args = _split_group_options(line.argv)
    with main.make_context("fghash", [*group_args, name], resilient_parsing=False) as parent:
        cmd = main.get_command(parent, name)
        assert cmd is not None, f"{line}: no command {name!r}"
        _without_existence_checks(cmd).make_context(name, args, parent=parent)


def test_the_docs_hold_the_command_lines_this_test_reads() -> None:
    """Extraction must not silently find nothing: every page with examples is read."""
    assert len(ALL) >= 60, [str(x) for x in ALL]
    pages = {x.page for x in ALL}
    for page in ("README.md", "docs/training.md", "docs/search.md", "docs/explain.md"):
        assert page in pages
    commands = {_split_group_options(x.argv)[1] for x in ALL}
    assert commands >= RUN | {"train", "demo"}
    assert {_split_group_options(x.argv)[1] for x in ALL if _runs(x)} == RUN


@pytest.mark.parametrize("line", ALL, ids=str)
def test_every_documented_command_line_parses(line: Line) -> None:
    parse(line)


def test_extraction_reads_a_shell_snippet_as_a_shell_would() -> None:
    words = list(_simple_commands("rm -rf fghash-demo && fghash demo # again"))
    assert [_fghash_argv(w) for w in words] == [None, ["demo"]]
    joined = list(_logical_lines(1, ["$ fghash search x \\", "    -k 5 > hits.jsonl"]))
    assert joined == [(1, "fghash search x      -k 5 > hits.jsonl")]
    assert [_fghash_argv(w) for w in _simple_commands(joined[0][1])] == [["search", "x", "-k", "5"]]
    assert _fghash_argv("conda activate fghash".split()) is None
    assert _fghash_argv("/usr/bin/time -v fghash info x".split()) == ["info", "x"]
    assert _fghash_argv("torchrun --nproc_per_node 4 -m fghash train --bits 48".split()) == [
        "train",
        "--bits",
        "48",
    ]


def test_a_renamed_option_fails_the_parse_check() -> None:
    with pytest.raises(click.UsageError):
        parse(Line("t", 1, ("search", "idx", "--no-such-option", "1")))
    with pytest.raises(AssertionError):
        parse(Line("t", 1, ("no-such-command",)))


def _runs(line: Line) -> bool:
    _, name, args = _split_group_options(line.argv)
    return name in RUN and any(a.startswith(DEMO) for a in args)


def _expand(args: list[str]) -> list[str]:
    """Shell globbing, as bash does it: a pattern with no match stays as written."""
    out: list[str] = []
    for a in args:
        matches = sorted(glob.glob(a)) if any(c in a for c in "*?[") else []
        out += matches or [a]
    return out


@pytest.fixture(scope="module")
def demo_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    where = tmp_path_factory.mktemp("docs")
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(where)
        r = CliRunner().invoke(main, ["demo", "--quick", "--device", "cpu", "--out", "fghash-demo"])
    torch.set_num_threads(threads)
    assert r.exit_code == 0, r.output
    return where


@pytest.mark.parametrize("page", [p for p in PAGES if any(_runs(x) for x in doc_lines(p))], ids=str)
def test_the_demo_folder_examples_run(
    page: Path, demo_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    monkeypatch.chdir(demo_folder)
    threads = torch.get_num_threads()
    try:
        for line in (x for x in doc_lines(page) if _runs(x)):
            r = CliRunner().invoke(main, _expand(list(line.argv)))
            assert r.exit_code == 0, f"{line}\n{r.output}\n{r.exception!r}"
    finally:
        torch.set_num_threads(threads)


def test_benchmark_scripts_named_in_the_docs_exist() -> None:
    names = {
        words[words.index("-m") + 1]
        for page in PAGES
        for _, words in _shell_lines(page)
        if "-m" in words[:-1] and words[words.index("-m") + 1].startswith("bench.")
    }
    assert len(names) >= 8, names
    for name in sorted(names):
        assert importlib.util.find_spec(name) is not None, name


def test_python_blocks_compile() -> None:
    for page in PAGES:
        for lang, start, lines in _blocks(page.read_text(encoding="utf-8")):
            if lang == "python":
                compile("\n".join(lines), f"{page}:{start}", "exec")


def test_readme_is_one_screenful_per_stage_and_keeps_the_ci_command() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 250
    command = 'pip install -e ".[cpu,test]" && python -m pytest -q'
    assert command in readme.splitlines()
    assert command in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()


def test_relative_links_point_at_files() -> None:
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text(encoding="utf-8")):
            if "://" not in target:
                assert (page.parent / target).exists(), f"{page.name}: {target}"
