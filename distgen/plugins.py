"""Plug-in families: `family: my_module:MyGAN` in a recipe imports a family class from your own code.

    accelerate launch launch/train.py my_recipes/hinge.yaml      # family: hinge_gan:HingeGAN

`my_module` is looked for on PYTHONPATH (sys.path), then in the working directory, then in the recipe's
folder (and, for a run dir's config.yaml, in the folder run.json recorded). The folder it is found in
stays on sys.path, so the plug-in can import its own sibling modules, and the launchers that start
processes elsewhere (launch/sweep.py, launch/submit.py) put it on their PYTHONPATH (`pythonpath`).
The contract a plug-in class follows is in docs/plugins.md. Everything here is called through ONE
resolver, distgen.recipes.family_class; this module only does the importing and its one-line errors.
"""
from __future__ import annotations

import dataclasses
import importlib
import importlib.machinery
import inspect
import os
import sys
from pathlib import Path

from distgen.errors import ConfigError

_found: list[str] = []  # folders plug-ins were imported from in this process, first found first
_extra: list[str] = []  # folders a launcher asked to search too (its caller's cwd, before it changed folder)


def is_plugin(name) -> bool:
    return isinstance(name, str) and ":" in name


def also_search(folder: str | Path) -> None:
    """Search `folder` too, after sys.path and the working directory (a launcher that changes folder
    keeps its caller's working directory this way: launch/sweep.py)."""
    folder = str(Path(folder).resolve())
    if folder not in _extra:
        _extra.append(folder)


def _folders(recipe_dir: str | Path | None) -> list[tuple[str, str]]:
    """(folder, why) in search order: sys.path (PYTHONPATH), cwd, the recipe's folder."""
    out = [(str(Path(e).resolve()), "PYTHONPATH") for e in sys.path if e and Path(e).is_dir()]
    out.append((os.getcwd(), "the working directory"))
    out += [(f, "the launching command's working directory") for f in _extra]
    if recipe_dir is not None:
        out.append((str(Path(recipe_dir).resolve()), "the recipe's folder"))
    return out


def import_family(name: str, recipe_dir: str | Path | None = None):
    """The family class `module:Class` names, checked against the family contract (one-line errors)."""
    from distgen.families.base import Family  # here: distgen.families imports nothing of this module

    module_name, _, class_name = name.partition(":")
    if not module_name or not class_name or not all(p.isidentifier() for p in [*module_name.split("."), class_name]):
        raise ConfigError(f"family '{name}' must be a built-in family name or module:Class of a plug-in family, "
                          f"e.g. hinge_gan:HingeGAN (docs/plugins.md)")
    top = module_name.split(".")[0]
    folders = _folders(recipe_dir)
    home = next((f for f, _ in folders if importlib.machinery.PathFinder.find_spec(top, [f]) is not None), None)
    if home is None and top not in sys.modules:
        searched = ", ".join(f"{why} {f}" for f, why in folders if why != "PYTHONPATH")
        raise ConfigError(f"family '{name}': module '{module_name}' was not found on PYTHONPATH, in {searched}; "
                          f"put {top}.py (or the package {top}/) in one of them or add its folder to PYTHONPATH")
    if home is not None:
        if home not in sys.path:
            sys.path.append(home)  # its sibling modules import too, as in a script run from that folder
        loaded = sys.modules.get(top)
        origin = importlib.machinery.PathFinder.find_spec(top, [home]).origin
        if loaded is not None and not _same_file(getattr(loaded, "__file__", None), origin):
            for key in [k for k in sys.modules if k == top or k.startswith(top + ".")]:
                del sys.modules[key]  # another file of that name was imported before: take the one found here
        if home not in _found:
            _found.append(home)
    importlib.invalidate_caches()  # a module written after this process looked at its folder
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - the plug-in's own import failed: name it, in one line
        raise ConfigError(f"family '{name}': importing module '{module_name}' failed: "
                          f"{type(exc).__name__}: {exc}") from None
    where = getattr(module, "__file__", module_name)
    cls = getattr(module, class_name, None)
    if cls is None:
        families = [n for n, v in vars(module).items() if inspect.isclass(v) and issubclass(v, Family)
                    and v.__module__ == module.__name__]
        raise ConfigError(f"family '{name}': module '{module_name}' ({where}) has no '{class_name}'; "
                          f"its family classes: {', '.join(families) or 'none'}")
    if not (inspect.isclass(cls) and issubclass(cls, Family)):
        raise ConfigError(f"family '{name}' is not a family: a plug-in family must be a class subclassing "
                          f"distgen.families.base.Family or a built-in family (docs/plugins.md)")
    model_cfg = getattr(cls, "ModelConfig", None)
    if not (inspect.isclass(model_cfg) and dataclasses.is_dataclass(model_cfg)):
        raise ConfigError(f"family '{name}' has no ModelConfig dataclass: give the class a "
                          f"`ModelConfig = <a frozen @dataclass>` typing its model.* keys (docs/plugins.md)")
    if cls.STYLE not in ("single", "adversarial"):
        raise ConfigError(f"family '{name}' has STYLE {cls.STYLE!r}; valid choices: single, adversarial")
    return cls


def _same_file(a: str | None, b: str | None) -> bool:
    """The same file however reached (a symlinked folder on PYTHONPATH): then the module is not imported
    again, and a class resolved twice is one class."""
    return a is not None and b is not None and Path(a).resolve() == Path(b).resolve()


def source(cls) -> dict:
    """run.json's record of where a family class came from: its module and that module's file."""
    module = sys.modules.get(cls.__module__)
    file = getattr(module, "__file__", None)
    return {"family_module": cls.__module__, "family_file": str(Path(file).resolve()) if file else None}


def import_root(module: str, file: str | Path) -> Path:
    """The folder to search for `module` whose file is `file` (a/b.py of module a.b: the folder holding a/)."""
    path = Path(file).parent
    if Path(file).name == "__init__.py":
        path = path.parent
    for _ in module.split(".")[1:]:
        path = path.parent
    return path


def pythonpath(current: str | None = None) -> str:
    """PYTHONPATH for processes started in another folder (sweep runs, SLURM jobs): the folders plug-in
    families were found in, then `current` (the PYTHONPATH they would have had)."""
    parts = [*_found, *[p for p in (current or "").split(os.pathsep) if p and p not in _found]]
    return os.pathsep.join(parts)


def found() -> list[str]:
    """The folders plug-in families were imported from in this process."""
    return list(_found)
