"""A long-lived fghash process for the concurrency tests: one JSON command per stdin line.

Started once and reused across rounds, so that a test can run many rounds of truly
concurrent writers without paying Python's and FAISS's import for every process. Each
command runs the library call the CLI command runs and answers one JSON line:
``{"rc": 0, ...}`` or ``{"rc": 2, "error": "..."}`` (what the CLI would print).

Commands: ``{"op": "add", "bundle": B, "codes": C, "wait": S}``; ``{"op": "build", ...}``
(the same fields: ``build-index C --out B --force``);
``{"op": "search", "bundle": B, "codes": Q, "k": K, "times": N}`` (N searches in a row,
each answer's ids and distances); ``{"op": "quit"}``.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from fghash.errors import FghashError
from fghash.ops.indexes import add_items
from index import build_bundle, search_bundle


def _search(cmd: dict[str, Any]) -> dict[str, Any]:
    answers = []
    for _ in range(int(cmd.get("times", 1))):
        res = search_bundle(cmd["bundle"], int(cmd["k"]), codes=cmd["codes"], split="query")
        answers.append([[[r["id"], r["distance"]] for r in q["results"]] for q in res])
    return {"rc": 0, "answers": answers}


def main() -> None:
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["op"] == "quit":
            break
        try:
            if cmd["op"] == "build":
                build_bundle(cmd["codes"], cmd["bundle"], overwrite=True, wait=float(cmd["wait"]))
                out: dict[str, Any] = {"rc": 0}
            elif cmd["op"] == "add":
                added = add_items(cmd["bundle"], cmd["codes"], wait=float(cmd["wait"]))
                out = {"rc": 0, "total": added.total}
            else:
                out = _search(cmd)
        except FghashError as e:
            out = {"rc": 2, "error": str(e)}
        except Exception as e:  # a traceback the CLI would show: report it as such
            out = {"rc": 1, "error": f"{type(e).__name__}: {e}"}
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
