"""The package's layering holds at run time, in a fresh interpreter: `core` loads nothing outside the standard
library, the base install's commands (`keeper run`, `keeper status`, `keeper --help`) load neither NumPy nor
matplotlib, and the CLI is the only place that defers an import. `make lint`'s import contracts check the static
imports; these check what actually gets loaded."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OPTIONAL = ("numpy", "matplotlib")


def _loaded_after(code: str) -> set[str]:
    """Top-level module names loaded by a fresh interpreter after running `code`."""
    probe = code + "\nimport json, sys\nprint(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_core_loads_only_the_standard_library() -> None:
    modules = [f"keeper.core.{p.stem}" for p in (ROOT / "keeper" / "core").glob("*.py") if p.stem != "__init__"]
    loaded = _loaded_after("\n".join(f"import {m}" for m in modules))
    at_start = _loaded_after("")  # what the interpreter's site setup loads anyway (e.g. the editable install's finder)
    third_party = loaded - at_start - set(sys.stdlib_module_names) - {"keeper"}
    assert modules
    assert not third_party, third_party


def test_base_commands_load_no_optional_extra() -> None:
    engine = [f"keeper.engine.{p.stem}" for p in (ROOT / "keeper" / "engine").glob("*.py") if p.stem != "__init__"]
    loaded = _loaded_after(
        "\n".join(["import keeper.cli.main", "import keeper.cli.run", *(f"import {m}" for m in engine)])
    )
    assert "apscheduler" in loaded  # the probe did load the runtime
    assert "web3" in loaded
    assert not loaded & set(OPTIONAL)


def test_help_loads_no_optional_extra_nor_the_scheduler() -> None:
    code = "import sys\nfrom keeper.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass"
    loaded = _loaded_after(code)
    assert not loaded & {*OPTIONAL, "apscheduler"}


def test_function_level_imports_only_in_the_cli() -> None:
    """No function below the CLI imports a keeper module: a deferred import there would hide a cycle."""
    found = []
    for path in sorted((ROOT / "keeper").rglob("*.py")):
        if path.parent.name == "cli":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for fn in (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)):
            for node in ast.walk(fn):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("keeper"):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.module}")
                if isinstance(node, ast.Import) and any(a.name.startswith("keeper") for a in node.names):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not found, found


def test_a_missing_extra_is_named_not_a_traceback() -> None:
    """On the base install (NumPy, matplotlib absent: here blocked in sys.modules) the commands that need an extra
    exit 2 naming it; nothing else is printed."""
    for command, extra in ((["optimize", "--sigma", "0.8"], "optimize"), (["drill", "black-thursday"], "drill")):
        code = (
            "import sys\nsys.modules['numpy'] = None\nsys.modules['matplotlib'] = None\n"
            f"from keeper.cli import main\nsys.exit(main({command!r}))"
        )
        out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False)
        assert out.returncode == 2, out.stderr
        assert f"collateral-keeper[{extra}]" in out.stderr
        assert "Traceback" not in out.stderr
