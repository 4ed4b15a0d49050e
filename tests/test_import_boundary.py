"""analyze and store_schema must never pull in the model stack (README: the analysis side installs without torch)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FORBIDDEN = ("torch", "transformers", "peft", "trl", "repcollapse.train", "repcollapse.extract")


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)


def test_import_analyze_and_store_schema_leaves_no_model_stack() -> None:
    code = (
        "import sys, pkgutil, importlib\n"
        "from repcollapse import analyze, store_schema\n"
        "for pkg in (analyze, store_schema):\n"
        "    for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
        "        importlib.import_module(m.name)\n"
        f"bad = sorted(m for m in {FORBIDDEN!r} if m in sys.modules)\n"
        "assert not bad, f'imported: {bad}'\n"
    )
    result = _run(code)
    assert result.returncode == 0, result.stderr[-2000:]


def test_the_check_can_fail() -> None:
    """Guard against a vacuous boundary test: importing torch is detected."""
    code = "import sys, torch\nassert 'torch' not in sys.modules\n"
    assert _run(code).returncode != 0


# ---------------------------------------------------------------- the static import graph

LAYERS_NEVER: dict[str, tuple[str, ...]] = {
    "analyze.engine": ("analyze.stats", "analyze.report"),
    "analyze.metrics": ("analyze.stats", "analyze.report"),
    "analyze.stats": ("analyze.engine", "analyze.metrics", "analyze.report"),
    "analyze.tables": ("analyze.engine", "analyze.metrics", "analyze.stats", "analyze.report"),
    "analyze.registry": ("analyze",),
    "analyze": ("train", "extract"),
    "store_schema": ("analyze", "train", "extract", "cli"),
}
"""Within repcollapse: modules of the key's area never import modules of these areas (an area is
a dotted prefix under repcollapse; the longest matching key applies, then the shorter ones).
The layer order inside analyze: tables below metrics and engine, stats above tables only, report
on top (``REPORT_MAY``); the registry imports nothing of its clients."""
REPORT_MAY: tuple[str, ...] = ("analyze.stats", "analyze.tables")
"""The only parts of analyze the report may import."""


def _module_files(root: Path, package: str) -> dict[str, tuple[Path, bool]]:
    out = {}
    for f in sorted((root / package).rglob("*.py")):
        parts = list(f.relative_to(root).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (f, is_pkg)
    return out


def import_graph(root: Path = REPO, package: str = "repcollapse") -> dict[str, set[str]]:
    """module -> the repcollapse modules it imports, from the source (every ``import`` statement,
    at any depth: inside functions and ``if TYPE_CHECKING`` blocks too). ``from a import b``
    counts as importing ``a.b`` when that is a module, else ``a``."""
    files = _module_files(root, package)

    def known(name: str) -> str | None:
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for mod, (path, is_pkg) in files.items():
        here = mod if is_pkg else mod.rpartition(".")[0]
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                deps |= {known(a.name) for a in node.names} - {None}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = here.rsplit(".", node.level - 1)[0] if node.level > 1 else here
                    base = f"{up}.{base}" if base else up
                for a in node.names:
                    sub = f"{base}.{a.name}"
                    dep = sub if sub in files else known(base)
                    if dep:
                        deps.add(dep)
        deps.discard(mod)
        graph[mod] = deps
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (as a path a -> ... -> a) per strongly connected component with more than one
    module or a self-import (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    comps: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1 or v in graph.get(v, ()):
                    comps.append(sorted(comp))
    return [_cycle_in(graph, set(c)) for c in comps]


def _cycle_in(graph: dict[str, set[str]], comp: set[str]) -> list[str]:
    """A path start -> ... -> start inside one strongly connected component (breadth first)."""
    start = min(comp)
    prev: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph.get(v, ())):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(prev[path[-1]])
                    return [*reversed(path), start]
                if w in comp and w not in prev:
                    prev[w] = v
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"no cycle through {start} in {sorted(comp)}")


def _area_rules(mod: str) -> list[tuple[str, tuple[str, ...]]]:
    rel = mod.removeprefix("repcollapse.")
    return [
        (area, never)
        for area, never in LAYERS_NEVER.items()
        if rel == area or rel.startswith(area + ".")
    ]


def _under(mod: str, area: str) -> bool:
    rel = mod.removeprefix("repcollapse.")
    return rel == area or rel.startswith(area + ".")


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for mod, deps in sorted(graph.items()):
        for dep in sorted(deps):
            for area, never in _area_rules(mod):
                hit = [n for n in never if _under(dep, n) and not _under(dep, area)]
                if hit:
                    bad.append(f"{mod} imports {dep} ({area} never imports {hit[0]})")
            allowed = [a for a in ("analyze.report", *REPORT_MAY) if _under(dep, a)]
            if _under(mod, "analyze.report") and _under(dep, "analyze") and not allowed:
                bad.append(f"{mod} imports {dep} (report may import only {list(REPORT_MAY)})")
    return bad


def test_no_import_cycles_anywhere_in_repcollapse() -> None:
    graph = import_graph()
    assert len(graph) > 50 and "repcollapse.analyze.registry" in graph  # the walk found the tree
    cycles = find_cycles(graph)
    print(f"{len(graph)} modules, {sum(map(len, graph.values()))} imports, {len(cycles)} cycles")
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_layer_order_inside_analyze() -> None:
    graph = import_graph()
    bad = layer_violations(graph)
    assert not bad, "\n".join(bad)
    reg = graph["repcollapse.analyze.registry"]
    assert not {d for d in reg if d.startswith("repcollapse.")}, reg


def test_the_cycle_finder_finds_cycles_and_function_level_imports(tmp_path: Path) -> None:
    """The checks can fail: a synthetic graph with cycles, and a module whose cycle hides behind
    a function-level import."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e"}, "f": {"d"}}
    assert find_cycles(graph) == [["a", "b", "c", "a"], ["e", "e"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []
    real = import_graph()
    hidden = {**real, "repcollapse.analyze.registry": {"repcollapse.analyze.metrics.spectrum"}}
    assert any("repcollapse.analyze.registry" in c for c in find_cycles(hidden))
    # a synthetic package: cycles behind a function-level import, a TYPE_CHECKING import and a
    # relative import are all found
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    for name, text in {
        "__init__.py": "",
        "a.py": "from pkg import b\n",
        "b.py": "def f():\n    import pkg.a\n",
        "sub/__init__.py": "",
        "sub/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.sub.d import X\n",
        "sub/d.py": "from . import c\nX = 1\n",
        "e.py": "from .sub import d\n",
    }.items():
        (pkg / name).write_text(text)
    graph = import_graph(tmp_path, "pkg")
    assert graph["pkg.e"] == {"pkg.sub.d"}
    assert find_cycles(graph) == [
        ["pkg.a", "pkg.b", "pkg.a"],
        ["pkg.sub.c", "pkg.sub.d", "pkg.sub.c"],
    ]
    engine = {"repcollapse.analyze.engine.x": {"repcollapse.analyze.stats.regression"}}
    report = {"repcollapse.analyze.report.y": {"repcollapse.analyze.engine.runner"}}
    registry = {"repcollapse.analyze.registry": {"repcollapse.analyze.metrics"}}
    assert layer_violations(engine) == [
        "repcollapse.analyze.engine.x imports repcollapse.analyze.stats.regression "
        "(analyze.engine never imports analyze.stats)"
    ]
    assert "report may import only" in layer_violations(report)[0]
    assert "analyze.registry never imports analyze" in layer_violations(registry)[0]


def test_the_registry_alone_has_the_built_ins_and_store_schema_stays_light() -> None:
    """The registry imports none of its clients, yet a fresh process that imports only it sees
    every built-in (the analysis package registers them); the store contract loads no analysis."""
    code = (
        "import sys\n"
        "import repcollapse.store_schema\n"
        "assert not [m for m in sys.modules if m.startswith('repcollapse.analyze')]\n"
        "from repcollapse.analyze import registry\n"
        "kinds = {registry.get(n).kind for n in registry.names()}\n"
        "assert {'erank', 'entropy', 'lora_overlap_prev', 'collapse_index'} <= set(registry.names())\n"
        "assert kinds == set(registry.KINDS), kinds\n"
    )
    result = _run(code)
    assert result.returncode == 0, result.stderr[-2000:]
