"""The shape of the code: layers, import circles, torch-free modules, sizes of the worker's units."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

PACKAGES = ("api", "batcher", "models")


def modules(packages: tuple[str, ...] = PACKAGES) -> dict[str, Path]:
    found = {}
    for package in packages:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "samples" in path.parts:
                continue
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules ``name`` imports, anywhere in it (a package import counts as its
    ``__init__``; ``from package import module`` as the module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            module = node.module if node.level == 0 else ".".join(filter(None, [base, node.module]))
            names = [module] + [f"{module}.{a.name}" for a in node.names]
        else:
            continue
        out |= {n for n in names if n in known and n != name}
    return out


def graph(packages: tuple[str, ...] = PACKAGES) -> dict[str, set[str]]:
    mods = modules(packages)
    return {name: imports(name, path, set(mods)) for name, path in mods.items()}


def test_api_imports_only_the_shared_protocol_package():
    for name, deps in graph().items():
        if name.split(".")[0] == "api":
            worker_side = {d for d in deps if d.split(".")[0] in ("batcher", "models")
                           and not d.startswith("batcher.queue")}
            assert not worker_side, f"{name} imports {sorted(worker_side)}"


def test_the_protocol_package_imports_nothing_of_the_worker():
    for name, deps in graph().items():
        if name.startswith("batcher.queue"):
            assert all(d.startswith("batcher.queue") for d in deps), f"{name} imports {sorted(deps)}"


API_GATEWAY = "api.queue"  # the API's one owner of its Redis clients


def redis_uses(path: Path) -> list[str]:
    """Where ``path`` imports redis (or the clients' factory) or reaches for a ``.redis`` client."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                 else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
        found += [f"line {node.lineno}: import {n}" for n in names
                  if n.split(".")[0] == "redis" or n == "batcher.queue.connect"]
        if isinstance(node, ast.Attribute) and node.attr == "redis":
            found.append(f"line {node.lineno}: .redis")
    return found


def test_only_the_gateway_touches_the_apis_redis_clients():
    uses = {name: redis_uses(path) for name, path in modules(("api",)).items() if name != API_GATEWAY}
    assert not {name: u for name, u in uses.items() if u}
    assert redis_uses(modules(("api",))[API_GATEWAY]), "the gateway moved: update API_GATEWAY"


def test_no_import_circles():
    g = graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(g[node]):
            assert state.get(dep) != 1, "import circle: " + " -> ".join(path[path.index(dep):] + [dep])
            if dep not in state:
                visit(dep, path + [dep])
        state[node] = 2

    for node in g:
        if node not in state:
            visit(node, [node])


def test_the_api_and_the_decode_stage_load_without_torch():
    code = ("import sys; import api.main, batcher.decode, batcher.queue.consumer; "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def _length(node: ast.AST) -> int:
    return node.end_lineno - node.lineno + 1


def test_modules_functions_and_classes_are_short():
    """Functions of at most 50 lines and classes of at most 160 everywhere; the worker's modules
    at most 200 lines."""
    too_long = []
    for name, path in modules().items():
        tree = ast.parse(path.read_text())
        if name.startswith("batcher") and tree.body and (tree.body[-1].end_lineno or 0) > 200:
            too_long.append(f"{name}: {tree.body[-1].end_lineno} lines")
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _length(node) > 50:
                too_long.append(f"{name}.{node.name}: {_length(node)} lines")
            if isinstance(node, ast.ClassDef) and _length(node) > 160:
                too_long.append(f"{name}.{node.name}: {_length(node)} lines (class)")
    assert not too_long, too_long
