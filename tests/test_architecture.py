"""The import graph (tools/import_graph.py): no cycle, no upward arrow, no private import
across modules, and docs/architecture.md's generated section up to date.

The checker itself is tested on a small tree with known faults planted in it.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _tool():
    spec = importlib.util.spec_from_file_location(
        "import_graph", ROOT / "tools" / "import_graph.py"
    )
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("import_graph", mod)
    spec.loader.exec_module(mod)
    return mod


def test_import_graph_has_no_violation_and_docs_are_current() -> None:
    found = _tool().check(ROOT)
    assert found == [], "\n".join(found)


def _write(root: Path, rel: str, text: str = "") -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _tree(root: Path) -> None:
    for pkg in ("fghash", "fghash/util", "fghash/codes", "fghash/eval", "index", "bench"):
        _write(root, f"{pkg}/__init__.py")
    _write(root, "fghash/util/atomic.py", "def _tmp():\n    pass\n")
    _write(root, "fghash/codes/file.py", "from fghash.util.atomic import _tmp\n")
    _write(  # an upward arrow hidden inside a function
        root, "fghash/eval/rank.py", "def f():\n    from index.search import go\n    return go\n"
    )
    _write(root, "index/search.py", "from . import store\n\ndef go():\n    pass\n")
    _write(root, "index/store.py", "import index.search\n")  # a cycle with search.py
    _write(root, "bench/report.py", "from fghash.codes import file\nimport numpy\n")
    _write(root, "index/_inner.py")
    _write(root, "fghash/codes/sheet.py", "from index._inner import x\n")
    _write(root, "fghash/newroom/__init__.py")


def test_checker_finds_planted_faults(tmp_path: Path) -> None:
    tool = _tool()
    _tree(tmp_path)
    g = tool.build_graph(tmp_path)
    assert g.edges["bench.report"] == {"fghash.codes.file"}  # numpy is outside
    assert g.edges["index.search"] == {"index.store"}  # a relative import resolved
    found = tool.violations(g)
    assert "fghash.newroom belongs to no room of LAYERS" in found
    assert "module cycle: index.search <-> index.store" in found
    assert any(
        v.startswith("upward arrow: fghash.eval.rank") and "index.search" in v for v in found
    )
    assert any(v.startswith("upward arrow: fghash.codes.sheet") for v in found)
    assert "fghash.codes.file imports the private name _tmp of fghash.util.atomic" in found
    assert any("private module index._inner from outside index" in v for v in found)
    room_cycles = [v for v in found if v.startswith("room cycle")]
    assert room_cycles == []  # the cycle is inside one room
    assert len(found) == 6


def test_docs_section_is_checked_and_rewritten(tmp_path: Path) -> None:
    tool = _tool()
    _write(tmp_path, "fghash/__init__.py")
    _write(tmp_path, "fghash/util/__init__.py")
    _write(tmp_path, "index/__init__.py", "import fghash.util\n")
    g = tool.build_graph(tmp_path)
    assert tool.docs_problems(tmp_path, g) != []  # no docs/architecture.md yet
    _write(
        tmp_path, "docs/architecture.md", f"# A\n\ntext\n\n{tool.START}\nold\n{tool.END}\n\nafter\n"
    )
    assert tool.docs_problems(tmp_path, g) != []
    tool.write_docs(tmp_path, g)
    text = (tmp_path / "docs/architecture.md").read_text()
    assert text.startswith("# A\n\ntext\n\n") and text.endswith("\n\nafter\n") and "old" not in text
    assert "| 4 | `index` | 1 | `fghash/util` |" in text
    assert tool.docs_problems(tmp_path, g) == []
