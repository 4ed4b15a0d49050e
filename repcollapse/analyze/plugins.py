"""User metric plugins: modules that register metrics, imported before names are resolved.

A plugin is a Python file (``my_metrics.py``) or an importable module name
(``mylab.metrics``) whose import calls ``repcollapse.analyze.registry.register``, with metrics of
any kind (moment, function, lora, derived): the drivers compute each through its entry's
``compute`` (its signature per kind: ``registry.COMPUTE_SIGNATURES``); an entry without one is
refused when it is constructed. ``repcollapse analyze
metrics --plugin SPEC`` and the ``REPCOLLAPSE_METRIC_PLUGINS`` environment variable (specs
separated by ``os.pathsep``) load them, so a metric written years after the extraction runs on
the archived store without editing this package.

Each spec is imported once per process (a second load returns the same module, so its
``register`` calls do not run twice). A file plugin is imported under its file name's stem
(``lab_metrics.py`` -> ``lab_metrics``; refused if another module already has that name). With
dask.distributed the runner uploads every file plugin to the workers (``Client.upload_file``),
which import it under the same name, so tasks that refer to its functions unpickle there; a
module-name plugin must be installed on the workers.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

ENV_VAR = "REPCOLLAPSE_METRIC_PLUGINS"
_LOADED: dict[str, ModuleType] = {}


class PluginError(ImportError):
    """A plugin that cannot be found or imported; the message names the spec and the cause."""


class MetricFailed(Exception):  # noqa: N818 (it is the error users see: "metric ... failed")
    """A metric whose compute function raised. One message: the metric, where its code comes
    from (the plugin file), the checkpoint, layer and selection, and the exception. Not a
    ValueError/RuntimeError: the CLI reports it as a failed run (exit 1), not a usage error.
    One string argument, so it pickles back from dask.distributed workers unchanged."""


def plugin_specs(explicit: Sequence[str] = ()) -> list[str]:
    """``explicit`` specs followed by those of ``$REPCOLLAPSE_METRIC_PLUGINS``, without repeats."""
    env = [s for s in os.environ.get(ENV_VAR, "").split(os.pathsep) if s.strip()]
    return list(dict.fromkeys([*explicit, *env]))


def load_plugin(spec: str) -> ModuleType:
    """Import one plugin (a ``.py`` path or a module name), once per process."""
    key = str(Path(spec).resolve()) if spec.endswith(".py") else spec
    if key in _LOADED:
        return _LOADED[key]
    module = _import_plugin(spec)
    _LOADED[key] = module
    return module


def _import_plugin(spec: str) -> ModuleType:
    if spec.endswith(".py"):
        path = Path(spec)
        if not path.is_file():
            raise PluginError(f"metric plugin {spec!r}: expected a Python file, found no file")
        name = path.stem
        if name in sys.modules:
            raise PluginError(
                f"metric plugin {spec!r}: expected a file name that is not already a module, "
                f"found {name!r} (from {getattr(sys.modules[name], '__file__', None)}); rename it"
            )
        module_spec = importlib.util.spec_from_file_location(name, path)
        if module_spec is None or module_spec.loader is None:
            raise PluginError(f"metric plugin {spec!r}: not importable as a Python module")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        try:
            module_spec.loader.exec_module(module)
        except Exception as exc:
            sys.modules.pop(name, None)
            raise PluginError(
                f"metric plugin {spec!r} failed on import: {type(exc).__name__}: {exc}"
            ) from exc
    else:
        try:
            module = importlib.import_module(spec)
        except ModuleNotFoundError as exc:
            raise PluginError(
                f"metric plugin {spec!r}: expected a .py file or an importable module, "
                f"found neither ({exc})"
            ) from exc
    return module


def load_plugins(explicit: Sequence[str] = ()) -> list[ModuleType]:
    """Every plugin of ``explicit`` and the environment, in that order."""
    return [load_plugin(s) for s in plugin_specs(explicit)]


def file_plugins() -> list[Path]:
    """The files of the file plugins loaded in this process (for upload to workers)."""
    return [Path(k) for k in _LOADED if k.endswith(".py")]


def metric_origin(metric: Any) -> str:
    """Where a metric's compute function lives: the plugin spec (file) that registered it, else
    its module (the worker's copy of a file plugin under dask.distributed, or a built-in)."""
    module_name = getattr(metric.compute, "__module__", None) or "?"
    for key, module in _LOADED.items():
        if module.__name__ == module_name:
            return f"plugin {key}"
    if module_name.split(".")[:2] == ["repcollapse", "analyze"]:
        return f"built-in, {module_name}"
    file = getattr(sys.modules.get(module_name), "__file__", None)
    return f"plugin {file}" if file else f"module {module_name}"


def metric_failed(
    metric: Any,
    checkpoint: str | None,
    layer: int,
    selection: tuple[str, str],
    exc: BaseException,
    name: str | None = None,
) -> MetricFailed:
    """The error for ``metric.compute`` raising ``exc`` (``name``: the reported metric name,
    e.g. ``entropy@T2``; ``checkpoint`` None: a derived metric, computed over every checkpoint
    at once)."""
    kind = getattr(metric, "kind", "")
    at_layer = f"layer -1 ({kind} metric)" if layer == -1 else f"layer {layer}"
    text = " ".join(str(exc).split()) or "(no message)"
    where = "every checkpoint" if checkpoint is None else f"checkpoint {checkpoint!r}"
    return MetricFailed(
        f"metric {name or metric.name!r} ({metric_origin(metric)}) failed on {where}, "
        f"{at_layer}, domain {selection[0]!r}, span {selection[1]!r}: "
        f"{type(exc).__name__}: {text}"
    )
