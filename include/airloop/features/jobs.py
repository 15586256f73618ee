"""The model's feature jobs: its declared aggregations (``features.aggregations``) and the
function its spec's ``features.transform`` names, and running them."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Callable

from airloop.daily_windows import Derived, WindowsResult, combine_results
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
    """Run the model's declared aggregations, then its feature job (views without either read
    the published tables as they are).

    ``changed_since`` covers what they rewrote and the published tables (events, reference
    tables) changed since the last online refresh; ``detail`` holds each aggregation's and the
    job's own detail (only the job's when there is nothing else), and ``detail["tables"]`` is
    what :func:`refresh_online` records once it has loaded them.
    """
    from airloop.features.aggregations import aggregate
    from airloop.table_changes import changed_tables

    s = settings or get_settings()
    tables = changed_tables(spec, s)
    parts: dict[str, Derived] = dict(aggregate(spec, s, force=force))
    job = load_transform(spec)
    if job is not None:
        result = job(spec, s, force=force)
        if not isinstance(result, Derived):
            raise TypeError(f"{spec.features.transform} returned {type(result).__name__}, not airloop.daily_windows.Derived")
        parts[spec.features.transform] = result
    result = _merged(parts, only=spec.features.transform)
    since = [t for t in (result.changed_since, tables.since) if t is not None]
    detail = {**result.detail, "changed_files": len(tables.files), "tables": tables.snapshot}
    return dataclasses.replace(result, changed_since=min(since) if since else None, detail=detail)


def _merged(parts: dict[str, Derived], only: str | None) -> Derived:
    """One result for several outputs: ``parts[only]`` as it is when it is the only one."""
    if not parts:
        return Derived(changed_since=None)
    if list(parts) == [only]:
        return parts[only]
    if all(isinstance(r, WindowsResult) for r in parts.values()):
        return combine_results(parts)
    changes = [r.changed_since for r in parts.values() if r.changed_since is not None]
    return Derived(
        changed_since=min(changes) if changes else None,
        rows=sum(r.rows for r in parts.values()),
        detail={name: {**r.detail, "rows": r.rows} for name, r in parts.items()},
    )
