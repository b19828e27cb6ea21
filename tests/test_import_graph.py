"""index/ has no import cycle: each module's imports of other index modules (at the top or inside functions,
read with ast, nothing imported) form a graph with no circle. The encoders share their model-file helpers
through index/modelfiles.py, so embedding -> onnx_encoder -> modelfiles runs one way."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "index"


def index_imports(source: str, package: str = "index") -> set[str]:
    """The modules of `package` that a module's source imports, wherever the import statement stands."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith(package + "."))
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # from . import x / from .x import y, inside the package
                found.update([node.module.split(".")[0]] if node.module else [a.name for a in node.names])
            elif node.module == package:
                found.update(a.name for a in node.names)
            elif node.module and node.module.startswith(package + "."):
                found.add(node.module.split(".")[1])
    return found


def import_graph(folder: Path = PACKAGE) -> dict[str, set[str]]:
    modules = {p.stem for p in folder.glob("*.py")}
    return {p.stem: index_imports(p.read_text(encoding="utf-8")) & modules - {p.stem}
            for p in sorted(folder.glob("*.py"))}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return path[path.index(dep):] + [dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_index_has_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle in index/: " + " -> ".join(cycle or [])


def test_the_encoders_share_model_files_one_way():
    graph = import_graph()
    assert "embedding" not in graph["onnx_encoder"]
    assert "modelfiles" in graph["onnx_encoder"] and "modelfiles" in graph["embedding"]
    assert graph["modelfiles"] == set()


def test_the_cycle_finder_sees_imports_inside_functions(tmp_path):
    (tmp_path / "a.py").write_text("from index.b import thing\n", encoding="utf-8")
    (tmp_path / "b.py").write_text("def f():\n    from index.c import other\n", encoding="utf-8")
    (tmp_path / "c.py").write_text("import index.a\n", encoding="utf-8")
    (tmp_path / "d.py").write_text("from index import a\nimport os\n", encoding="utf-8")
    assert find_cycle(import_graph(tmp_path)) == ["a", "b", "c", "a"]
    (tmp_path / "c.py").write_text("import os\n", encoding="utf-8")
    assert find_cycle(import_graph(tmp_path)) is None
