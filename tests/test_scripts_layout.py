"""The shape of scripts/ (issue 24): a package run as ``python -m scripts.NAME``, its shared
helpers in scripts/lib, no sys.path patches, no import circles, no file over 400 lines."""
from __future__ import annotations

import ast
import re
from pathlib import Path

from conftest import ROOT

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


def scripts_graph() -> dict[str, set[str]]:
    mods = {}
    for p in python_files("scripts"):
        parts = p.relative_to(ROOT).with_suffix("").parts
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    graph = {}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = node.module if node.level == 0 else ".".join(filter(None, [base, node.module]))
                names = [module] + [f"{module}.{a.name}" for a in node.names]
            else:
                continue
            deps |= {n for n in names if n in mods and n != name}
        graph[name] = deps
    return graph


def test_scripts_import_each_other_without_circles():
    graph = scripts_graph()
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
