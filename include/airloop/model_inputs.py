"""Model inputs that are not numbers: encoding them inside the model, and finding them again.

A model's inputs (:func:`airloop.train.feature_columns`) are the request fields and the
features of the spec's FeatureService; either may hold strings (a ``string`` dataset column,
a Feast ``String`` feature). Callers send and the feature store returns the strings; the model
encodes them itself, so the prediction service, the prediction log and the drift monitor all
see the values people know, never codes.

- :func:`encode_inputs` wraps the spec's estimator, when some input is non-numeric, in a
  scikit-learn ``Pipeline``: a ``ColumnTransformer`` that ordinal-encodes those columns (unknown
  and missing values get one code) and passes the rest through, then the estimator.
  HistGradientBoosting estimators also get the encoded columns as ``categorical_features`` so
  they split on categories natively, when the registry's loader can load such a model (see
  :func:`native_categorical_loadable`). An all-numeric frame gets the estimator back as it
  was: models without strings are exactly what they were before.
- :func:`fit_params` routes sample weights to the estimator inside the pipeline.
- :func:`categorical_inputs` names the string inputs of a fitted model (what serving must not
  cast to float).
- :func:`is_categorical` is the one rule for "this column holds strings", shared by training,
  serving and monitoring.

Everything saved is a scikit-learn object, so models still load with skops without pickle.
Heavy libraries (pandas, numpy, sklearn) are imported inside the functions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "CATEGORICAL",
    "ENCODE_STEP",
    "MODEL_STEP",
    "NATIVE_CATEGORICAL_TYPES",
    "categorical_columns",
    "categorical_inputs",
    "encode_inputs",
    "fit_params",
    "is_categorical",
    "known_categories",
    "native_categorical_loadable",
]

# Step and transformer names of the pipeline :func:`encode_inputs` builds. They are part of
# saved models (``fit_params`` and ``categorical_inputs`` find the pieces by them): keep them.
ENCODE_STEP = "encode"
MODEL_STEP = "model"
CATEGORICAL = "categorical"

# What a HistGradientBoosting model with ``categorical_features`` saves beyond scikit-learn's
# own types: its internal preprocessor validates the numeric columns with
# ``functools.partial(sklearn.utils.validation.check_array, ...)``. skops checks the partial's
# function and arguments as nodes of their own, so only the partial itself is new.
NATIVE_CATEGORICAL_TYPES = ("functools.partial",)

# What pandas' ``infer_dtype`` calls an object column of numbers (and missing values): such a
# column is cast to float by the estimator as before, not encoded as categories.
_NUMERIC_OBJECT_KINDS = frozenset({"integer", "floating", "mixed-integer-float", "decimal", "boolean", "empty"})


def is_categorical(series: "pd.Series") -> bool:
    """Whether a column holds categories (strings) rather than numbers.

    Pandas ``category`` and ``string`` columns are categorical; numeric and boolean columns are
    not. An ``object`` column is categorical when it holds a non-number: a column of numbers
    with gaps (``[1, None]``, as a join with missing rows can produce) is still numeric, as it
    was before string inputs existed. All-missing columns count as numeric.
    """
    import pandas as pd

    dtype = series.dtype
    if isinstance(dtype, (pd.CategoricalDtype, pd.StringDtype)):
        return True
    if pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype):
        return False
    if pd.api.types.is_datetime64_any_dtype(dtype) or pd.api.types.is_timedelta64_dtype(dtype):
        return False
    return pd.api.types.infer_dtype(series, skipna=True) not in _NUMERIC_OBJECT_KINDS


def categorical_columns(frame: "pd.DataFrame", columns: Iterable[str] | None = None) -> list[str]:
    """The columns of ``frame`` (or of ``columns``, in that order) that :func:`is_categorical`."""
    names = list(frame.columns if columns is None else columns)
    return [c for c in names if is_categorical(frame[c])]


def native_categorical_loadable() -> bool:
    """Whether :func:`airloop.registry.load_sklearn_model` accepts what native categories save.

    A model the registry would refuse to load can never serve, so training only asks
    HistGradientBoosting for native categorical splits when the loader trusts
    :data:`NATIVE_CATEGORICAL_TYPES`; otherwise the ordinal codes are split on as numbers
    (still correct, a little less sharp on categories with no natural order).
    """
    from airloop import registry

    return all(registry.is_trusted_type(t) for t in NATIVE_CATEGORICAL_TYPES)


def encode_inputs(estimator: Any, inputs: "pd.DataFrame", *, native: bool | None = None) -> Any:
    """``estimator`` behind an encoder of the categorical columns of ``inputs``; unchanged if none.

    ``inputs``: the training inputs (the model's columns, in order), used for their types and,
    for native categories, their cardinality. The returned ``Pipeline`` (not fitted) is
    ``encode`` (a ``ColumnTransformer``: an ``OrdinalEncoder`` over the categorical columns, the
    other columns passed through, pandas output with the original column names) then ``model``
    (``estimator``). The categories are those of ``inputs`` (fit the pipeline on them: a refit
    on other data keeps these categories). Unknown categories and missing values (None or NaN)
    share one code: NaN when the estimator handles missing values (HistGradientBoosting routes
    them natively), else -1. The string columns must reach the model as objects (a float
    column of NaN does not encode): serving and monitoring build them so.

    ``native``: mark the encoded columns as ``categorical_features`` of a HistGradientBoosting
    estimator (default: when :func:`native_categorical_loadable`). Columns with more
    categories than the estimator's ``max_bins`` stay ordinal numbers (the estimator refuses
    more), and an estimator whose spec already sets ``categorical_features`` keeps it.
    """
    import numpy as np
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OrdinalEncoder
    from sklearn.utils import get_tags

    categorical = categorical_columns(inputs)
    if not categorical:
        return estimator
    # NaN is what a missing numeric input already is; an estimator that cannot take NaN gets a
    # code no category has instead of failing at the first unknown value.
    code = np.nan if get_tags(estimator).input_tags.allow_nan else -1  # an int: OrdinalEncoder wants one
    encoder = OrdinalEncoder(
        # The categories are the training inputs' values, given rather than learned: learned
        # categories would make None (what Feast, parquet and JSON give for a missing string)
        # a category of its own, and NaN (what pandas gives) a missing value. Given, both are
        # outside the categories and get the one code, like an unknown value.
        categories=[known_categories(inputs[c]) for c in categorical],
        handle_unknown="use_encoded_value",
        unknown_value=code,
        encoded_missing_value=code,
        dtype=np.float64,
    )
    encode = ColumnTransformer(
        [(CATEGORICAL, encoder, categorical)],
        remainder="passthrough",
        # The estimator sees the inputs' own names: feature importances and
        # ``categorical_features`` by name keep meaning what the spec means.
        verbose_feature_names_out=False,
    ).set_output(transform="pandas")
    if native is None:
        native = native_categorical_loadable()
    params = estimator.get_params(deep=False)
    if native and _is_hist_gradient_boosting(estimator) and params.get("categorical_features") in (None, "from_dtype"):
        max_bins = params.get("max_bins", 255)
        fits = [c for c in categorical if inputs[c].nunique(dropna=True) <= max_bins]
        if fits:
            estimator.set_params(categorical_features=fits)
    return Pipeline([(ENCODE_STEP, encode), (MODEL_STEP, estimator)])


def known_categories(series: "pd.Series") -> list[Any]:
    """The distinct non-missing values of a categorical column, sorted by their text (stable codes)."""
    return sorted(series.dropna().unique().tolist(), key=lambda v: (str(v), type(v).__name__))


def _is_hist_gradient_boosting(estimator: Any) -> bool:
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    return isinstance(estimator, (HistGradientBoostingClassifier, HistGradientBoostingRegressor))


def _encoded_pipeline(model: Any) -> Any | None:
    """``model`` if it is a pipeline :func:`encode_inputs` built, else None."""
    steps = getattr(model, "named_steps", None)
    if steps is None or ENCODE_STEP not in steps or MODEL_STEP not in steps:
        return None
    return model


def fit_params(model: Any, sample_weight: Any = None) -> dict[str, Any]:
    """Keyword arguments of ``model.fit`` that give ``sample_weight`` (None: none) to the estimator.

    A ``Pipeline`` takes per-step parameters as ``<step>__<name>``; a bare estimator takes
    ``sample_weight`` itself.
    """
    if sample_weight is None:
        return {}
    if _encoded_pipeline(model) is not None:
        return {f"{MODEL_STEP}__sample_weight": sample_weight}
    return {"sample_weight": sample_weight}


def categorical_inputs(model: Any) -> tuple[str, ...]:
    """The inputs a model encodes as categories (fitted by :func:`encode_inputs`); () for others.

    Read from the fitted encoder, so a loaded model says it itself: serving keeps these
    columns as strings and casts the rest to float.
    """
    pipeline = _encoded_pipeline(model)
    if pipeline is None:
        return ()
    encode = pipeline.named_steps[ENCODE_STEP]
    for name, _transformer, columns in getattr(encode, "transformers_", None) or encode.transformers:
        if name == CATEGORICAL:
            return tuple(str(c) for c in columns)
    return ()
