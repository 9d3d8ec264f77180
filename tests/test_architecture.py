"""The import rules of ARCHITECTURE.md: layers import downwards only, and no import cycles
between modules (imports inside functions count)."""
from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
LEAVES = {"errors", "fields", "resources", "progress"}
ABOVE_TARGETS = {"cli", "options", "deploy", "demo", "train", "report", "bench", "__main__"}
ABOVE_DEPLOY = {"cli", "demo", "report", "__main__"}

def modules() -> dict[str, Path]:
    out = {}
    for p in (SRC / "edgessm").rglob("*.py"):
        parts = p.relative_to(SRC).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, p in mods.items():
        package = m if p.name == "__init__.py" else m.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(p.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    pkg = package
                    for _ in range(node.level - 1):
                        pkg = pkg.rsplit(".", 1)[0]
                    base = f"{pkg}.{base}" if base else pkg
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            for t in targets:
                while t and t not in mods and "." in t:
                    t = t.rsplit(".", 1)[0]
                if t in mods and t != m:
                    graph[m].add(t)
    return graph


def layer(m: str) -> str:
    parts = m.split(".")
    return parts[1] if len(parts) > 1 else ""


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(comp)

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_the_graph_is_read():
    g = import_graph()
    assert "edgessm.ssm.layer" in g["edgessm.ssm.network"]
    assert "edgessm.targets.fixed.cgen" in g["edgessm.targets.fixed.verify"]
    assert "edgessm.toolchain" in g["edgessm.targets.cpu.engine"]


def test_lower_layers_import_nothing_above_them():
    bad = []
    for m, deps in import_graph().items():
        for d in deps:
            allowed = {layer(m)} | LEAVES | ({"toolchain"} if layer(m) == "ssm" else set())
            if layer(m) in ("ssm", "data", "toolchain") and layer(d) not in allowed:
                bad.append(f"{m} -> {d}")
            if layer(m) == "targets" and layer(d) in ABOVE_TARGETS:
                bad.append(f"{m} -> {d}")
            if layer(m) == "deploy" and layer(d) in ABOVE_DEPLOY:
                bad.append(f"{m} -> {d}")
            if layer(d) == "cli" and layer(m) not in ("cli", "__main__"):   # only the entry point
                bad.append(f"{m} -> {d}")
    assert not bad, "imports that point upwards (see ARCHITECTURE.md): " + "; ".join(sorted(bad))


def test_the_command_line_is_a_package_of_its_own():
    mods = modules()
    assert "edgessm.cli" in mods and "edgessm.cli.deploy" in mods and "edgessm.cli.common" in mods
    for old in ("edgessm.cli_deploy", "edgessm.cli_common", "edgessm.cli_onnx", "edgessm.export.cli"):
        assert old not in mods, old
    assert "edgessm.cli" in import_graph()["edgessm.__main__"]


def test_no_import_cycles():
    found = [sorted(c) for c in cycles(import_graph())]
    assert not found, f"import cycles (break them; see ARCHITECTURE.md): {found}"


def test_a_cycle_is_found():
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(g) == [{"a", "b", "c"}]
