"""The model's own feature job: the function its spec's ``features.transform`` names, and running it."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Callable

from airloop.daily_windows import Derived
from airloop.settings import Settings, get_settings

if TYPE_CHECKING:
    from airloop.spec import ModelSpec


def load_transform(spec: "ModelSpec") -> Callable[..., Derived] | None:
    """The function named by the spec's ``features.transform`` (None if it names none).

    The dotted path is imported with the spec's directory first on ``sys.path``, and must
    resolve to a module under that directory (not an installed module of the same name).
    """
    from airloop.spec import SpecError, import_model_module

    dotted = spec.features.transform
    if dotted is None:
        return None
    module_name, _, function = dotted.rpartition(".")
    try:
        module = import_model_module(spec, module_name)
    except SpecError as exc:
        raise SpecError(f"features.transform {dotted!r}: {exc}") from None
    job = getattr(module, function, None)
    if not callable(job):
        raise SpecError(f"{spec.name}: features.transform {dotted!r}: {module_name} has no function {function!r}")
    return job


def derive(spec: "ModelSpec", settings: Settings | None = None, *, force: bool = False) -> Derived:
    """Run the model's feature job (views without one read the published tables as they are).

    ``changed_since`` covers both what the job rewrote and the published tables (events,
    reference tables) changed since the last online refresh; ``detail["tables"]`` is what
    :func:`refresh_online` records once it has loaded them.
    """
    from airloop.table_changes import changed_tables

    s = settings or get_settings()
    tables = changed_tables(spec, s)
    job = load_transform(spec)
    result = Derived(changed_since=None) if job is None else job(spec, s, force=force)
    if not isinstance(result, Derived):
        raise TypeError(f"{spec.features.transform} returned {type(result).__name__}, not airloop.daily_windows.Derived")
    since = [t for t in (result.changed_since, tables.since) if t is not None]
    detail = {**result.detail, "changed_files": len(tables.files), "tables": tables.snapshot}
    return dataclasses.replace(result, changed_since=min(since) if since else None, detail=detail)
