"""Test isolation: no two fixtures in tests/ share a name with different scopes.

Ape snapshots the chain before each scope's fixtures and reverts after, and it orders a test's fixtures by the
scopes of every fixture of the same name in the session, not just the one the test gets. A function-scoped
`sequencer` in test_oracle_router.py, beside the module-scoped `sequencer` of test_drill.py, was therefore set up
before the test's snapshot: its router setting survived the revert and reached every later test of the module
(the "isolation leak" of the CHANGELOG). Reproduced with a module-scoped `sequencer` fixture in any file collected
first; fixed by renaming. This test keeps it from coming back."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def fixture_scopes() -> dict[str, set[tuple[str, str]]]:
    """name -> {(scope, file)} for every `@pytest.fixture` function in tests/ and its tiers (tests/unit/ runs in the
    same session under `make test`)."""
    found: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for path in sorted(TESTS.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.FunctionDef):
                continue
            for deco in node.decorator_list:
                target = deco.func if isinstance(deco, ast.Call) else deco
                if not (isinstance(target, ast.Attribute) and target.attr == "fixture"):
                    continue
                scope = "function"
                if isinstance(deco, ast.Call):
                    for kw in deco.keywords:
                        if kw.arg == "scope" and isinstance(kw.value, ast.Constant):
                            scope = str(kw.value.value)
                found[node.name].add((scope, str(path.relative_to(TESTS))))
    return found


def test_fixture_names_have_one_scope() -> None:
    found = fixture_scopes()
    assert "system" in found  # the scan sees conftest's fixtures
    clashes = {name: sorted(uses) for name, uses in found.items() if len({scope for scope, _ in uses}) > 1}
    assert not clashes, f"fixtures sharing a name across scopes break ape's isolation; rename one: {clashes}"
