"""The code a module runs: every module of `cvrepro` it imports, directly or through others,
at module level or inside a function (a lazy import is still code the module may run).

Importing `a.b.c` also runs the module-level code of the packages `a` and `a.b`: those files
count, and so do the modules *their* module-level code imports, but not the imports inside
their functions, which run only when something calls them (a module that uses a package's
names imports the package itself, and then all of it counts)."""

from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

PACKAGE = "cvrepro"


def module_file(src: Path, module: str) -> Path | None:
    """The file of a dotted module name under `src` (a package's __init__.py), or None."""
    base = src.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def all_modules(src: Path) -> list[str]:
    """Every module of the package under `src`, dotted (a package by its own name), sorted."""
    out = []
    for path in (src / PACKAGE).rglob("*.py"):
        parts = path.relative_to(src).with_suffix("").parts
        out.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return sorted(out)


def _parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _import_nodes(tree: ast.AST, top_level_only: bool):
    """Import statements of the tree; with top_level_only, not those inside a function body."""
    todo = list(ast.iter_child_nodes(tree))
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        if top_level_only and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        todo.extend(ast.iter_child_nodes(node))


def import_targets(src: Path, module: str, top_level_only: bool = False) -> list[tuple[int, str]]:
    """(line, cvrepro module used) for each import statement of `module` (inside functions too, unless
    top_level_only; `if TYPE_CHECKING:` imports count as well)."""
    path = module_file(src, module)
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    used: list[tuple[int, str]] = []
    for node in _import_nodes(tree, top_level_only):
        if isinstance(node, ast.Import):
            used += [(node.lineno, a.name) for a in node.names]
            continue
        if node.level:  # relative: resolve against this module's package
            base = module.split(".") if is_package else module.split(".")[:-1]
            base = base[: len(base) - (node.level - 1)]
            target = ".".join(base + ([node.module] if node.module else []))
        else:
            target = node.module or ""
        for a in node.names:  # `from pkg import sub` uses the submodule; `from pkg import name` the package
            used.append((node.lineno, f"{target}.{a.name}" if module_file(src, f"{target}.{a.name}") else target))
    return sorted((line, m) for line, m in used
                  if (m == PACKAGE or m.startswith(PACKAGE + ".")) and module_file(src, m))


@lru_cache(maxsize=None)
def imports(src: Path, module: str, top_level_only: bool = False) -> tuple[frozenset[str], frozenset[str]]:
    """(modules used, packages only run as parents) by the import statements of `module`."""
    used = {m for _line, m in import_targets(src, module, top_level_only)}
    parents = {p for m in used for p in _parents(m)} - used
    return frozenset(used), frozenset(parents)


def closure(src: Path, module: str, entry: str | None = None) -> set[str]:
    """`module` and every cvrepro module whose code importing it may run, transitively.

    entry: the package of the command line that runs `module` (its modules count with their
    module-level code only: of their command functions only the one that imports `module` runs)."""
    full: set[str] = set()
    parent_only: set[str] = set()
    todo: list[tuple[str, bool]] = [(module, False), *((p, True) for p in _parents(module))]
    if entry:
        todo.append((entry, True))
    while todo:
        m, as_parent = todo.pop()
        as_parent = as_parent or bool(entry and (m == entry or m.startswith(entry + ".")))
        if m in full or (as_parent and m in parent_only):
            continue
        (parent_only if as_parent else full).add(m)
        used, parents = imports(src, m, top_level_only=as_parent)
        todo.extend((u, False) for u in used)
        todo.extend((p, True) for p in parents)
    return full | parent_only


def files(src: Path, modules: set[str], root: Path) -> set[str]:
    """The modules' files as posix paths relative to `root`."""
    return {module_file(src, m).relative_to(root).as_posix() for m in modules}
