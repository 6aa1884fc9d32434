"""The keeper package's shape, for comparing two trees (before and after a redesign): modules per package, the
largest functions, function-level imports, `Any` in function signatures, and mypy strict's coverage.

    python benchmarks/package_shape.py [ROOT ...]      # default: this checkout

mypy's coverage is measured by running `mypy --strict --any-exprs-report` on ROOT/keeper (the share of expressions
whose type is not Any); it needs mypy on PATH, and is skipped with --no-mypy.
"""

from __future__ import annotations

import argparse
import ast
import re
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path


def _functions(tree: ast.AST) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]


def _any_in_signature(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    annotations = [a.annotation for a in [*fn.args.args, *fn.args.kwonlyargs] if a.annotation is not None]
    if fn.returns is not None:
        annotations.append(fn.returns)
    return sum(1 for a in annotations if "Any" in ast.unparse(a))


def _lazy_imports(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    found = []
    for node in ast.walk(fn):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("keeper"):
            found.append(node.module)
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.startswith("keeper")]
    return found


def shape(root: Path, run_mypy: bool) -> None:
    pkg = root / "keeper"
    files = sorted(p for p in pkg.rglob("*.py") if "__pycache__" not in p.parts)
    per_package: Counter[str] = Counter()
    sizes: list[tuple[int, str]] = []
    lazy: list[str] = []
    any_params = 0
    lines = 0
    for f in files:
        rel = f.relative_to(root)
        package = ".".join(rel.parent.parts)
        if f.name != "__init__.py":
            per_package[package] += 1
        text = f.read_text(encoding="utf-8")
        lines += text.count("\n")
        tree = ast.parse(text)
        for fn in _functions(tree):
            end = fn.end_lineno or fn.lineno
            sizes.append((end - fn.lineno + 1, f"{rel}:{fn.lineno} {fn.name}"))
            any_params += _any_in_signature(fn)
            lazy += [f"{rel}:{fn.name} -> {m}" for m in _lazy_imports(fn)]
    sizes.sort(reverse=True)
    print(f"== {root}")
    print(f"modules: {sum(per_package.values())} in {len(per_package)} package(s), {lines:,} lines")
    for package, n in sorted(per_package.items()):
        print(f"  {package:20} {n:3d} modules")
    print("largest functions (lines):")
    for n, where in sizes[:5]:
        print(f"  {n:4d}  {where}")
    print(f"function-level imports of keeper modules: {len(lazy)}")
    for item in lazy:
        print(f"  {item}")
    print(f"`Any` in function signatures (parameters and returns): {any_params}")
    if run_mypy:
        with tempfile.TemporaryDirectory() as out:
            subprocess.run(
                [sys.executable, "-m", "mypy", "--strict", "--any-exprs-report", out, str(pkg)],
                cwd=root,
                capture_output=True,
                text=True,
                check=False,
            )
            report = Path(out) / "any-exprs.txt"
            total = report.read_text().strip().splitlines()[-1] if report.exists() else ""
            m = re.search(r"(\d+)\s+(\d+)\s+([\d.]+)%", total)
            if m:
                print(f"mypy strict: {m.group(3)} % of {int(m.group(2)):,} expressions typed (not Any)")
            else:
                print("mypy strict: no report (is mypy installed?)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("roots", nargs="*", type=Path, default=[Path(__file__).resolve().parent.parent])
    p.add_argument("--no-mypy", action="store_true")
    args = p.parse_args()
    for root in args.roots:
        shape(root.resolve(), not args.no_mypy)


if __name__ == "__main__":
    main()
