"""The shape of scripts/ (issue 24): a package run as ``python -m scripts.NAME``, its shared
helpers in scripts/lib, no sys.path patches, no import circles, no file over 400 lines."""
from __future__ import annotations

import re
from pathlib import Path

from conftest import ROOT
from test_layout import graph as layout_graph

MAX_LINES = 400


def python_files(*folders: str) -> list[Path]:
    return sorted(p for f in folders for p in (ROOT / f).rglob("*.py") if "samples" not in p.parts)


def test_no_sys_path_patches_in_scripts_or_tests():
    patched = [str(p.relative_to(ROOT)) for p in python_files("scripts", "tests")
               if re.search(r"sys\.path\.(insert|append)|sys\.path\[[^]]*\]\s*=", p.read_text())]
    assert not patched, patched


def test_no_file_in_scripts_or_the_chaos_harness_is_over_400_lines():
    for p in python_files("scripts", "tests/chaos"):
        lines = sum(1 for line in p.read_text().splitlines() if line.strip())
        assert lines <= MAX_LINES, f"{p.relative_to(ROOT)}: {lines} non-blank lines"


def test_scripts_import_each_other_without_circles():
    graph = layout_graph(("scripts",))
    assert "scripts._options_bench" in graph["scripts.bench_worker"]  # the graph sees imports

    def visit(name: str, path: list[str]) -> None:
        assert name not in path, " -> ".join(path[path.index(name):] + [name])
        for dep in graph[name]:
            visit(dep, path + [name])

    for name in graph:
        visit(name, [])


def test_the_shell_scripts_run_python_scripts_as_modules():
    for sh in (ROOT / "scripts").glob("*.sh"):
        assert not re.search(r"python3? scripts/\w+\.py", sh.read_text()), sh.name
