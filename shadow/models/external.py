"""Looking a family up (:func:`get_family`): a built-in by name, or a user's own by import path.

``[model] family = "my_pkg.models:MyFamily"`` names a family outside shadow-sweep.

The path is a string everywhere (the sweep file, candidate specs, stored
records), and every process that trains resolves it itself: the driver when it
reads the config, each Ray worker when it trains a candidate. A pickled class
would also have to be imported by the worker (cloudpickle sends importable
classes by reference), but the failure would then surface inside the first
candidate; the string makes the import explicit, and
:mod:`shadow.sweep.workers` tries it on every node before any candidate runs.

``attr`` is a :class:`~shadow.models.base.ModelFamily` subclass (instantiated
with no arguments) or an instance. Like ``python -m`` and ``uvicorn
module:app``, the current directory is searched too (after installed
packages), so a module beside the sweep's working directory imports without
installing it. Each resolved family is checked against the contract
(:func:`shadow.models.contract.check_declaration`) and kept, one shared
instance per process, as the built-ins are.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
import threading
from typing import Any

from shadow.errors import ConfigError
from shadow.models.base import FAMILIES, ModelFamily

#: ``package.module:Attr``: dotted identifiers on both sides of one colon.
_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
_FIX_IMPORT = (
    "install the package that holds it (pip install -e .), run from the folder that holds it, or add "
    "that folder to PYTHONPATH; on a Ray cluster every node needs it (see docs/user-guide.md)"
)



class FamilyImportError(ConfigError):
    """The path does not import here; ``reason`` says why in a few words (for a worker's report)."""

    def __init__(self, at: str, reason: str, fix: str) -> None:
        super().__init__(f"{at}: {reason}; {fix}.")
        self.reason = reason


_resolved: dict[str, ModelFamily] = {}
_lock = threading.Lock()


def get_family(name: str, where: str = "[model]") -> ModelFamily:
    """The family ``name``: a registered one, or an import path ``"module:attr"`` resolved and checked.

    An unknown name, a path that does not import or a family that breaks the
    contract is a ConfigError naming it and the fix.
    """
    if isinstance(name, str) and is_family_path(name):
        return resolve_family(name, where)
    return FAMILIES.get(name, where)


def is_family_path(name: str) -> bool:
    """Whether ``name`` is meant as an import path (it has a colon) rather than a built-in name."""
    return ":" in name


def resolve_family(path: str, where: str = "[model]") -> ModelFamily:
    """The family ``path`` names, imported and checked once per process; ConfigError otherwise."""
    with _lock:
        family = _resolved.get(path)
        if family is None:
            family = _import_family(path, where)
            _resolved[path] = family
        return family


def _import_family(path: str, where: str) -> ModelFamily:
    at = f"{where}: family {path!r}"
    if not _PATH.match(path):
        raise ConfigError(
            f"{at} is not an import path; write it as \"package.module:ClassName\" (one colon, dotted "
            "names), or use a built-in family name such as \"mlp\"."
        )
    module_name, attr_path = path.split(":")
    module = _import_module(module_name, at)
    target: Any = module
    for part in attr_path.split("."):
        if not hasattr(target, part):
            raise FamilyImportError(
                at, f"module {module_name!r} ({getattr(module, '__file__', '?')}) has no attribute "
                f"{attr_path!r}", "check the spelling after the colon"
            )
        target = getattr(target, part)
    family = _instantiate(target, at)
    # Imported here: the contract's dry run needs the exporter (onnx), which a lookup by name does not.
    from shadow.models.contract import check_declaration

    check_declaration(family, at)
    return family


def _import_module(module_name: str, at: str) -> Any:
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        # After installed packages, so a stray local file never shadows a real one.
        sys.path.append(cwd)
    if module_name not in sys.modules:
        importlib.invalidate_caches()  # a module written since the last import must be seen
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing and (module_name == missing or module_name.startswith(missing + ".")):
            raise FamilyImportError(at, f"no module named {missing!r}", _FIX_IMPORT) from None
        raise FamilyImportError(
            at, f"importing {module_name!r} failed: it needs module {missing!r}, which is not installed",
            "install it (and on every Ray node)",
        ) from None
    except Exception as exc:  # the user's module raised while importing: say where, not a traceback
        raise FamilyImportError(
            at, f"importing {module_name!r} failed with {type(exc).__name__}: {_one_line(exc)}",
            f"fix that module (run `python -c \"import {module_name}\"` to see the traceback)",
        ) from None


def _instantiate(target: Any, at: str) -> ModelFamily:
    if isinstance(target, ModelFamily):
        return target
    if isinstance(target, type) and issubclass(target, ModelFamily):
        abstract = sorted(getattr(target, "__abstractmethods__", ()))
        if abstract:
            raise ConfigError(
                f"{at}: class {target.__name__} does not implement {', '.join(abstract)}; define "
                "build(self, params, n_features, n_classes, mean, std, input_shape=None) returning "
                "a torch module."
            )
        try:
            return target()
        except Exception as exc:
            raise ConfigError(
                f"{at}: {target.__name__}() failed with {type(exc).__name__}: {_one_line(exc)}; a family "
                "is built with no arguments (hold no state), or point the path at an instance."
            ) from None
    raise ConfigError(
        f"{at} is a {type(target).__name__}, not a model family; point it at a subclass of "
        "shadow.models.ModelFamily (or an instance of one)."
    )


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:200] + ("..." if len(text) > 200 else "")
