"""distgen.config is the schema the families import; it must never import the family registry
(config -> families -> dann -> config was a cycle). distgen.recipes joins the two."""
from __future__ import annotations

import ast
import subprocess
import sys

from conftest import ROOT


def imported_modules(path) -> set[str]:
    """Every module an `import` or `from ... import` names anywhere in the file (also inside functions)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_config_never_imports_the_family_registry():
    assert not [m for m in imported_modules(ROOT / "distgen" / "config.py") if m.startswith("distgen.families")]
    code = ("import sys, distgen.config as c; c.read('recipes/quickstart.yaml', ['train.steps=5']); "
            "assert 'distgen.families' not in sys.modules, sorted(m for m in sys.modules if m.startswith('distgen'))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


def test_recipes_types_the_model_section_by_family():
    from distgen import recipes
    from distgen.families import FAMILIES

    cfg = recipes.load(ROOT / "recipes" / "quickstart.yaml", ["model.z_dim=7"])
    assert isinstance(cfg.model, FAMILIES[cfg.family].ModelConfig) and cfg.model.z_dim == 7
