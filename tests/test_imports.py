"""No import cycle inside minissd, counting imports inside functions.

Every module under minissd/ and kernels/ (installed as minissd.kernels) is parsed with `ast`;
each import statement, wherever it sits, adds an edge from its module to the minissd module it
names. The modules are found by walking the folders, so new or renamed files are included."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"minissd": ROOT / "minissd", "minissd.kernels": ROOT / "kernels"}


def module_files(packages=PACKAGES):
    """{module name: path} for every .py file of the package (a package is its __init__.py)."""
    found = {}
    for package, folder in packages.items():
        for path in sorted(folder.rglob("*.py")):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join([package] + parts)] = path
    return found


def imported_names(name, path, modules):
    """The minissd modules that module `name` (file `path`) imports, anywhere in the file."""
    is_package = path.name == "__init__.py"
    out = set()

    def add(target):
        # "minissd.a.b.c" may name a function c of module minissd.a.b: take the longest module
        while target and target not in modules:
            target = target.rpartition(".")[0]
        if target and target != name:
            out.add(target)

    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:                       # relative: from its own package upwards
                package = name.split(".") if is_package else name.split(".")[:-1]
                base = package[:len(package) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:             # "from pkg import sub" imports pkg.sub
                full = f"{source}.{alias.name}"
                add(full if full in modules else source)
    return out


def import_graph(packages=PACKAGES):
    """{module: the package's modules it imports}"""
    modules = module_files(packages)
    return {name: imported_names(name, path, modules) for name, path in modules.items()}


def find_cycle(graph):
    """One cycle of `graph` ({node: set of nodes}) as a list [a, b, ..., a], or None."""
    state = {}                     # node -> "open" while on the DFS stack, "done" after
    stack = []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_graph_sees_every_kind_of_import(tmp_path):
    files = {"__init__.py": "",
             "a.py": "from . import b\nfrom .sub.c import f\n",
             "b.py": "def g():\n    import pkg.sub\n",            # inside a function
             "sub/__init__.py": "from .. import a\n",
             "sub/c.py": "from ..b import g\nimport numpy\n",
             "../kern/__init__.py": "from pkg.a import x\n"}      # installed as pkg.kern
    for name, text in files.items():
        path = tmp_path / "pkg" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    graph = import_graph({"pkg": tmp_path / "pkg", "pkg.kern": tmp_path / "kern"})
    assert graph["pkg.a"] == {"pkg.b", "pkg.sub.c"}
    assert graph["pkg.b"] == {"pkg.sub"}
    assert graph["pkg.sub"] == {"pkg.a"}
    assert graph["pkg.sub.c"] == {"pkg.b"}
    assert graph["pkg.kern"] == {"pkg.a"}
    assert set(graph) == {"pkg", "pkg.a", "pkg.b", "pkg.sub", "pkg.sub.c", "pkg.kern"}
    assert find_cycle(graph) == ["pkg.a", "pkg.b", "pkg.sub", "pkg.a"]


def test_graph_covers_the_package():
    graph = import_graph()
    assert {"minissd.train", "minissd.inference", "minissd.kernels"} <= set(graph)
    assert "minissd.drawing" in graph["minissd.detect"]      # imported inside a method


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)
