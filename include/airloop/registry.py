"""The MLflow model registry, as Airloop uses it: one adapter for every stage.

Conventions (aliases, not the deprecated stages):
- every training run registers a new version of the model named after the spec;
- ``@champion`` is the version serving traffic, ``@challenger`` the latest one that lost;
- each promotion, rejection and rollback is appended to the registered model's tags as
  ``airloop.history.NNNNNN`` (JSON: when, who, action, version, reason).

Errors: only "this alias or model does not exist" reads as "no champion"; any other registry
fault raises :class:`~airloop.errors.RegistryError`, so a flaky registry can never look like a
first model. Models load without pickle: only the skops format, with the trusted types fixed
here, never read from the artifact.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import getpass
import json
import logging
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from airloop.errors import ModelNotServable, RegistryError, UntrustedModel
from airloop.settings import Settings, get_settings

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient

    from airloop.spec import ModelSpec

__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "HISTORY_PREFIX",
    "HOLDOUT_ARTIFACT",
    "REFERENCE_ARTIFACT",
    "TRUSTED_MODULES",
    "LoadedModel",
    "champion_version",
    "client",
    "current_actor",
    "download_frame",
    "ensure_experiment",
    "history",
    "holdout_metrics",
    "check_tree_bounds",
    "load_sklearn_model",
    "load_version",
    "is_not_found",
    "model_inputs",
    "quiet_model_io",
    "record",
]

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
HISTORY_PREFIX = "airloop.history."
REFERENCE_ARTIFACT = "reference/training_set.parquet"
HOLDOUT_ARTIFACT = "reference/holdout.parquet"
# Types a model artifact may ask skops to load beyond skops' own safe defaults: scikit-learn's.
# Fixed by the code: a model that needs anything else (a custom class, a function) is refused.
TRUSTED_MODULES = ("sklearn.",)
# Exact type names trusted besides: skops checks a partial's function and arguments on their own
# (HistGradientBoosting with categorical features holds a partial of sklearn's check_array).
TRUSTED_TYPES = frozenset({"functools.partial"})


def client(settings: Settings | None = None) -> "MlflowClient":
    """An MLflow client on ``settings.mlflow_tracking_uri`` (the fluent API is pointed there too)."""
    import mlflow

    s = settings or get_settings()
    mlflow.set_tracking_uri(s.mlflow_tracking_uri)
    if s.mlflow_tracking_uri.startswith("sqlite:///"):
        _create_sqlite_store(s.mlflow_tracking_uri)
    return mlflow.MlflowClient(tracking_uri=s.mlflow_tracking_uri)


_SQLITE_STORES_READY: set[str] = set()


def _create_sqlite_store(uri: str) -> None:
    """Create (migrate) an embedded SQLite tracking and registry store once, one process at a time.

    MLflow's tracking and registry stores each create and migrate an empty database when they
    are first opened, without a lock: two processes opening a fresh database at once (two models'
    prediction services polling for their champions, two models' training tasks) run the same
    migrations side by side and fail half way ("duplicate column name", "table ... already
    exists", alembic_version left behind). Here the first opener migrates under a file lock
    beside the database, and the others find it complete.
    """
    if uri in _SQLITE_STORES_READY:
        return
    import mlflow

    from airloop.fileio import exclusive

    path = Path(uri.removeprefix("sqlite:///"))
    path.parent.mkdir(parents=True, exist_ok=True)
    with exclusive(path.with_name(path.name + ".create.lock")):
        # Opening each store creates and migrates its tables if they are missing.
        mlflow.MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
        mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri).search_registered_models(max_results=1)
    _SQLITE_STORES_READY.add(uri)


def ensure_experiment(name: str, *, model: str, settings: Settings | None = None) -> str:
    """The id of experiment ``name``, created if missing (safe against a concurrent creator).

    With a local store, artifacts go under ``AIRLOOP_HOME``; a tracking server keeps its own.
    """
    from mlflow.exceptions import MlflowException

    s = settings or get_settings()
    mlflow_client = client(s)
    existing = mlflow_client.get_experiment_by_name(name)
    if existing is not None:
        return existing.experiment_id
    location = None
    if not s.mlflow_tracking_uri.startswith("http"):
        location = (s.mlflow_artifacts_dir / name).as_uri()
    try:
        return mlflow_client.create_experiment(name, artifact_location=location, tags={"airloop.model": model})
    except MlflowException:  # created by a concurrent run meanwhile
        existing = mlflow_client.get_experiment_by_name(name)
        if existing is None:
            raise
        return existing.experiment_id


def is_not_found(exc: Exception) -> bool:
    """Whether an MLflow error says the model or alias does not exist (and nothing else)."""
    code = getattr(exc, "error_code", "")
    if code == "RESOURCE_DOES_NOT_EXIST":
        return True
    # A missing alias comes back as INVALID_PARAMETER_VALUE "Registered model alias X not found."
    return code == "INVALID_PARAMETER_VALUE" and "alias" in str(exc) and "not found" in str(exc)


def champion_version(
    spec: "ModelSpec", settings: Settings | None = None, *, mlflow_client: "MlflowClient | None" = None
) -> str | None:
    """The version ``@champion`` points at; None only if the model or the alias does not exist.

    Raises :class:`RegistryError` for any other failure (server down, auth, a broken store).
    """
    mlflow_client = mlflow_client or client(settings)
    try:
        return str(mlflow_client.get_model_version_by_alias(spec.registered_model_name, CHAMPION).version)
    except Exception as exc:
        if is_not_found(exc):
            return None
        raise RegistryError(
            f"cannot read @{CHAMPION} of {spec.registered_model_name!r} from the registry: "
            f"{type(exc).__name__}: {exc}"
        ) from exc


def history(spec: "ModelSpec", settings: Settings | None = None) -> list[dict]:
    """Every promotion, rejection and rollback of the spec's model, oldest first."""
    model = client(settings).get_registered_model(spec.registered_model_name)
    return [json.loads(v) for k, v in sorted(model.tags.items()) if k.startswith(HISTORY_PREFIX)]


def record(spec: "ModelSpec", event: dict[str, Any], settings: Settings | None = None) -> None:
    """Append ``event`` (stamped with the time) to the model's history tags."""
    mlflow_client = client(settings)
    name = spec.registered_model_name
    model = mlflow_client.get_registered_model(name)
    seq = sum(1 for k in model.tags if k.startswith(HISTORY_PREFIX)) + 1
    event = {"at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), **event}
    mlflow_client.set_registered_model_tag(name, f"{HISTORY_PREFIX}{seq:06d}", json.dumps(event))


def holdout_metrics(run_metrics: dict[str, float]) -> dict[str, float]:
    """The holdout metrics logged by training (``holdout_<name>``), by their plain names."""
    return {k.removeprefix("holdout_"): v for k, v in run_metrics.items() if k.startswith("holdout_")}


def download_frame(run_id: str, artifact: str, settings: Settings | None = None) -> "pd.DataFrame":
    """A parquet artifact of a run, read into a DataFrame."""
    import mlflow
    import pandas as pd

    s = settings or get_settings()
    with tempfile.TemporaryDirectory() as tmp:
        path = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=artifact, dst_path=tmp, tracking_uri=s.mlflow_tracking_uri
        )
        return pd.read_parquet(path)


def current_actor() -> str:
    """Who acts: the Airflow run id inside a task (Airflow records the user), else the OS user."""
    return os.environ.get("AIRFLOW_CTX_DAG_RUN_ID") or getpass.getuser()


@contextlib.contextmanager
def quiet_model_io() -> Iterator[None]:
    """Import skops, save, log or load a model without flooding a task log with warnings.

    skops finds the module of an object that has none (scipy's ~230 ufuncs when ``skops.io`` is
    imported, any in a model when it is saved or loaded) with a ``getattr`` on every loaded
    module. In an Airflow task those include five Airflow deprecation shims
    (``airflow.utils.timezone``, ...), which answer each probe with a ``DeprecatedImportWarning``:
    ~1,160 warnings, all raised from skops' scan, none about Airloop's code. Exactly those are
    ignored. Any other warning is shown once per block: skops mutates the warning filters at
    every scan, which resets Python's own "default"/"once" bookkeeping, so MLflow's hint about
    integer columns (signature, then input example) would otherwise appear twice.
    """
    with warnings.catch_warnings():  # restores the filters and ``showwarning`` on the way out
        warnings.filterwarnings(
            "ignore", message=r"The `airflow\.", category=FutureWarning, module=r"skops\.io\._utils"
        )
        show, shown = warnings.showwarning, set()

        def show_once(message, category, filename, lineno, file=None, line=None):
            if (str(message), category) not in shown:
                shown.add((str(message), category))
                show(message, category, filename, lineno, file, line)

        warnings.showwarning = show_once
        yield


# -- loading models without pickle ----------------------------------------------------------


def is_trusted_type(name: str) -> bool:
    """Whether a type a model artifact asks for may load (see :data:`TRUSTED_MODULES`)."""
    return name.startswith(TRUSTED_MODULES) or name in TRUSTED_TYPES


def load_sklearn_model(model_uri: str, settings: Settings | None = None) -> Any:
    """Load a scikit-learn model logged by MLflow, refusing anything that could run code.

    Only the skops format is read; pickle and cloudpickle artifacts are refused. The types the
    artifact asks for must be skops' defaults or :func:`is_trusted_type`: the list
    the artifact itself declares (``skops_trusted_types`` in its MLmodel) is ignored, and no
    ``code_paths`` of the artifact reach ``sys.path``.
    """
    import mlflow
    from mlflow.models import Model

    s = settings or get_settings()
    client(s)
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=tmp))
        flavor = Model.load(str(local / "MLmodel")).flavors.get("sklearn")
        if flavor is None:
            raise UntrustedModel(f"{model_uri}: not a scikit-learn model (no sklearn flavor)")
        fmt = flavor.get("serialization_format")
        if fmt != "skops":
            raise UntrustedModel(f"{model_uri}: serialized as {fmt!r}; only 'skops' loads without running code")
        path = local / flavor["pickled_model"]
        if not path.resolve().is_relative_to(local.resolve()):
            raise UntrustedModel(f"{model_uri}: the model file points outside the artifact")
        with quiet_model_io():  # importing skops scans every loaded module
            import skops.io

            asked = skops.io.get_untrusted_types(file=path)
            refused = [t for t in asked if not is_trusted_type(t)]
            if refused:
                raise UntrustedModel(f"{model_uri}: the model needs untrusted types {refused}; refused")
            model = skops.io.load(path, trusted=asked)
    check_tree_bounds(model)
    return model


def check_tree_bounds(model: Any) -> None:
    """Refuse histogram-boosting trees whose node indices point outside their arrays.

    scikit-learn indexes a ``TreePredictor``'s ``left``/``right``/``feature_idx`` without bounds
    checks, so a crafted artifact could read out-of-bounds memory at predict time (skops flags
    the type for that reason). A model Airloop trained always passes.
    """
    import numpy as np
    from sklearn.ensemble._hist_gradient_boosting.predictor import TreePredictor

    n_features = getattr(model, "n_features_in_", None)
    stack, seen = [model], set()
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, TreePredictor):
            nodes = obj.nodes
            inner = nodes[~nodes["is_leaf"].astype(bool)]
            size = len(nodes)
            bad = any(((inner[f] < 0) | (inner[f] >= size)).any() for f in ("left", "right"))
            if n_features is not None:
                bad = bad or bool(((inner["feature_idx"] < 0) | (inner["feature_idx"] >= n_features)).any())
            if bad:
                raise UntrustedModel("a tree of the model has node or feature indices out of range; refused")
        elif isinstance(obj, (list, tuple)):
            stack.extend(obj)
        elif type(obj).__module__.startswith("sklearn.") and not isinstance(obj, np.ndarray):
            stack.extend(getattr(obj, "__dict__", {}).values())


@dataclass(frozen=True)
class LoadedModel:
    """A model version in memory with the input columns it expects, by name."""

    name: str
    version: str
    run_id: str
    model: Any
    inputs: tuple[str, ...]
    loaded_at: dt.datetime

    def predict(self, frame: "pd.DataFrame", task: str):
        """Scores: the positive class's probability (classification) or the prediction."""
        if task == "classification":
            return self.model.predict_proba(frame)[:, 1]
        return self.model.predict(frame)


def model_inputs(model: Any, model_uri: str | None = None) -> tuple[str, ...]:
    """The model's input column names: ``feature_names_in_``, else the MLflow signature."""
    names = getattr(model, "feature_names_in_", None)
    if names is not None:
        return tuple(str(n) for n in names)
    if model_uri:
        from mlflow.models import get_model_info

        signature = get_model_info(model_uri).signature
        if signature is not None and signature.inputs is not None:
            return tuple(signature.inputs.input_names())
    raise ModelNotServable(f"{model_uri or model!r}: cannot tell its input column names")


def load_version(spec: "ModelSpec", version: str, settings: Settings | None = None) -> LoadedModel:
    """Load one registered version (by number, never by alias: the alias may move meanwhile)."""
    s = settings or get_settings()
    name = spec.registered_model_name
    mv = client(s).get_model_version(name, str(version))
    uri = f"models:/{name}/{mv.version}"
    model = load_sklearn_model(uri, s)
    return LoadedModel(
        name=name,
        version=str(mv.version),
        run_id=mv.run_id or "",
        model=model,
        inputs=model_inputs(model, uri),
        loaded_at=dt.datetime.now(dt.timezone.utc),
    )
