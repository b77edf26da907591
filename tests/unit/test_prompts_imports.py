"""The registry depends on prompt files (``ragops.prompts``), never the reverse: the cycle
prompts <-> registry (``prompts.load_prompt`` imported the registry inside the function) stays
broken. Read with ast, so an import hidden in a function counts."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_prompts_module_never_imports_the_registry() -> None:
    """The registry depends on prompt files (ragops.prompts), never the reverse: no import of
    ragops.registry in prompts.py, at module level or inside a function."""
    tree = ast.parse((ROOT / "include" / "ragops" / "prompts.py").read_text(encoding="utf-8"))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module or "")
            if node.module == "ragops":
                imported |= {f"ragops.{a.name}" for a in node.names}
    assert not {m for m in imported if m == "ragops.registry" or m.startswith("ragops.registry.")}, imported
    code = "import sys, ragops.prompts; print('ragops.registry' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"


def test_load_prompt_lives_in_the_registry() -> None:
    import ragops.prompts
    import ragops.registry

    assert callable(ragops.registry.load_prompt)
    assert not hasattr(ragops.prompts, "load_prompt")  # one place, on the registry's side
