"""The declared minimum versions are the ones tools/floor_env.sh tested, and no code path
needs more: setup.cfg, environment.yml and tools/floor_requirements.txt agree, and numpy 2
functions are used only behind a fallback."""

from __future__ import annotations

import configparser
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONDA_NAMES = {"pytorch": "torch"}  # conda-forge name -> PyPI name


def _name(text: str) -> str:
    return text.strip().lower().replace("_", "-")


def floor_pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "tools" / "floor_requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[_name(name)] = version.strip()
    return pins


def _floors(lines: list[str]) -> dict[str, str]:
    out = {}
    for line in lines:
        m = re.match(r"^\s*([A-Za-z0-9_.-]+)\s*>=\s*([0-9][0-9.]*)", line)
        if m:
            out[_name(m.group(1))] = m.group(2)
    return out


def setup_cfg_floors() -> dict[str, str]:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    lines = cfg["options"]["install_requires"].splitlines()
    for extra in ("cpu", "test"):
        lines += cfg["options.extras_require"][extra].splitlines()
    return _floors(lines)


def environment_floors() -> dict[str, str]:
    lines = [
        re.sub(r"^\s*-\s*", "", line).split("=*")[0]
        for line in (ROOT / "environment.yml").read_text().splitlines()
        if re.match(r"^\s*-\s*[A-Za-z]", line)
    ]
    return {CONDA_NAMES.get(k, k): v for k, v in _floors(lines).items()}


def _same_floor(declared: str, pinned: str) -> bool:
    """``>=2.5`` declares the floor ``2.5.0``: equal after padding with zeros."""
    a, b = (v.split(".") for v in (declared, pinned))
    width = max(len(a), len(b))
    return a + ["0"] * (width - len(a)) == b + ["0"] * (width - len(b))


def test_setup_cfg_floors_are_the_tested_pins():
    pins, floors = floor_pins(), setup_cfg_floors()
    assert set(pins) <= set(floors), f"pinned but not declared: {set(pins) - set(floors)}"
    for name, pinned in pins.items():
        assert _same_floor(floors[name], pinned), (name, floors[name], pinned)


def test_environment_yml_floors_are_the_tested_pins():
    pins, floors = floor_pins(), environment_floors()
    assert {"torch", "torchvision", "numpy", "click"} <= set(floors)
    for name, declared in floors.items():
        if name in pins:
            assert _same_floor(declared, pins[name]), (name, declared, pins[name])
    # faiss-gpu (conda only) has the API of the tested faiss-cpu
    assert _same_floor(floors["faiss-gpu"], pins["faiss-cpu"])


def test_floor_parsing_by_hand():
    assert _same_floor("2.5", "2.5.0") and not _same_floor("2.5", "2.6.0")
    assert _floors(["  torch>=2.5", "x<3", "milvus-lite>=2.5,<3; sys_platform"]) == {
        "torch": "2.5",
        "milvus-lite": "2.5",
    }


def test_numpy_2_functions_only_behind_a_fallback():
    # numpy >= 1.25 is declared; np.bitwise_count arrived in 2.0
    for folder in ("fghash", "index", "bench", "tools"):
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text()
            if "np.bitwise_count(" in text:
                assert 'hasattr(np, "bitwise_count")' in text, path
