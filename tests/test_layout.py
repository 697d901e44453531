"""The layout's rules: folders by role, imports one way with no circles, and ``import tasks``
(Luigi's ``--module tasks``, forked workers, ``--help``) loads no TensorFlow or torch."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "model", "tasks", "studio")
#: Which top-level package may import which (tasks -> model -> pipeline; the studio reads
#: model cards and calls model/, never tasks/).
MAY_IMPORT = {"pipeline": {"pipeline"}, "model": {"model", "pipeline"},
              "tasks": {"tasks", "model", "pipeline"}, "studio": {"studio", "model", "pipeline"}}


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Project modules ``name`` imports anywhere in its file (module level or inside a function)."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # a relative import: up from the importing package
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name and not name.startswith(target + "."):  # a package's own __init__
                found.add(target)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def test_no_import_circles():
    graph = _graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(node, stack):
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import circles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_imports_go_one_way():
    wrong = [f"{a} imports {b}" for a, targets in _graph().items() for b in targets
             if b.split(".")[0] not in MAY_IMPORT[a.split(".")[0]]]
    assert not wrong, wrong


def test_folders_group_by_role():
    """model/ and pipeline/ keep only their shared contracts at the top; the rest is in role folders."""
    top = {p.name for p in (ROOT / "model").glob("*.py")}
    assert top == {"__init__.py", "card.py", "config.py", "cpu.py"}, top
    assert {p.name for p in (ROOT / "model").iterdir() if p.is_dir() and p.name != "__pycache__"} == {
        "nets", "variants", "train", "eval", "apps"}
    assert {p.name for p in (ROOT / "pipeline").iterdir() if p.is_dir() and p.name != "__pycache__"} == {
        "net", "crawl", "sources", "align"}


def test_import_tasks_loads_no_tensorflow():
    code = ("import sys, tasks; heavy = sorted(m for m in ('tensorflow', 'keras', 'torch') if m in sys.modules); "
            "print(','.join(heavy)); assert len(tasks.__all__) > 20")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"import tasks loaded {out.stdout.strip()}"
