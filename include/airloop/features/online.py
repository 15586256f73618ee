"""Serving: the model's FeatureService, its feature names and online feature lookups."""

from __future__ import annotations

from typing import TYPE_CHECKING

from airloop.features.store import get_store
from airloop.settings import Settings

if TYPE_CHECKING:
    from feast import FeatureService, FeatureStore

    from airloop.spec import ModelSpec


def feature_service(spec: "ModelSpec", store: "FeatureStore") -> "FeatureService":
    """The spec's FeatureService as the registry holds it now.

    Feast rebuilds the object from the registry's protobuf on every call (~0.4 ms), so a
    server should hold it and re-read it now and then rather than once per request.
    """
    return store.get_feature_service(spec.features.service, allow_cache=True)


def service_feature_names(service: "FeatureService") -> list[str]:
    """The feature names of a FeatureService, in its order."""
    return [f.name for projection in service.feature_view_projections for f in projection.features]


def feature_names(
    spec: "ModelSpec", *, store: "FeatureStore | None" = None, settings: Settings | None = None
) -> list[str]:
    """The model's feature names in the service's order: use it to build model inputs."""
    store = store or get_store(settings)
    return service_feature_names(feature_service(spec, store))


def get_online_features(
    spec: "ModelSpec",
    rows: list[dict],
    *,
    store: "FeatureStore | None" = None,
    settings: Settings | None = None,
    service: "FeatureService | None" = None,
) -> list[dict]:
    """Serving features for each request row (join keys plus request fields), in row order.

    Each result maps feature name to value, in the service's feature order; an unknown
    entity gets ``None`` for its stored and derived features. When serving, pass a
    long-lived ``store`` (building one loads the registry) and ``service`` (see
    :func:`feature_service`).
    """
    store = store or get_store(settings)
    service = service or feature_service(spec, store)
    keys = list(dict.fromkeys([*spec.join_keys, *spec.features.request]))
    entity_rows = [{k: row[k] for k in keys} for row in rows]
    values = store.get_online_features(features=service, entity_rows=entity_rows).to_dict()
    # to_dict() does not keep the service's feature order: rebuild each row by name.
    names = service_feature_names(service)
    return [{name: values[name][i] for name in names} for i in range(len(rows))]
