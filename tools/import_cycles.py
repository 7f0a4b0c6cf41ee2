"""Print any import cycle among the project's modules, and any breach of its layering; exit 1 if found.

Reads the ``import`` statements of ``vqspeech/`` and ``cli/`` (shipped as ``vqspeech_cli``) with
:mod:`ast`, at every level of a file (imports inside functions count: a cycle dodged with a
late import is still a cycle), and looks for strongly connected components of the graph.
The layering rules (``../shared/STYLE.md``): the library never imports ``vqspeech_cli``, typer
or rich; ``vqspeech/tokens.py`` (with ``bitpack.py``), ``vqspeech/config.py`` (with ``recipe_io.py`` and
``prior_config.py``) and ``vqspeech/files.py`` import no torch.

    python tools/import_cycles.py [ROOT]
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGES = {"vqspeech": "vqspeech", "cli": "vqspeech_cli"}  # folder -> import name
#: Modules that must not import these top-level packages (directly).
FORBIDDEN = {
    "vqspeech": ("vqspeech_cli", "typer", "rich"),
    "vqspeech.tokens": ("torch",),
    "vqspeech.bitpack": ("torch",),
    "vqspeech.config": ("torch",),
    "vqspeech.recipe_io": ("torch",),
    "vqspeech.prior_config": ("torch",),
    "vqspeech.files": ("torch",),
}


def modules(root: Path) -> dict[str, Path]:
    """Import name -> file, for every module of the project's packages under ``root``."""
    found = {}
    for folder, name in PACKAGES.items():
        for path in sorted((root / folder).rglob("*.py")):
            parts = [name, *path.relative_to(root / folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def imports(module: str, path: Path) -> set[str]:
    """Every absolute module name ``path`` imports (relative imports resolved)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # from pkg import module
    return names


def graph(root: Path) -> dict[str, set[str]]:
    """Module -> the project modules it imports."""
    mods = modules(root)
    return {m: {n for n in imports(m, p) if n in mods and n != m} for m, p in mods.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def breaches(root: Path) -> list[str]:
    """``module imports package`` for every top-level package the layering rules forbid it."""
    out = []
    for module, path in modules(root).items():
        for top in sorted({name.split(".")[0] for name in imports(module, path)}):
            for scope, banned in FORBIDDEN.items():
                if (module == scope or module.startswith(scope + ".")) and top in banned:
                    out.append(f"{module} imports {top} ({scope} must not import it)")
    return out


def main(argv: list[str]) -> int:
    root = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent.parent
    problems = [f"import cycle: {' <-> '.join(c)}" for c in cycles(graph(root))] + breaches(root)
    for line in problems:
        print(line)
    if not problems:
        print(f"no import cycle and no layering breach among {len(modules(root))} modules")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
