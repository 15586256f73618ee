"""Airloop's exceptions, in one place.

Stage and adapter modules raise these; callers (DAG tasks, the HTTP service) catch them by
kind. A :class:`ServeError` carries the HTTP status the prediction service answers with; a
:class:`ClientError` (the ``airloop`` command's, from :mod:`airloop.client`) its exit code.
"""

from __future__ import annotations

__all__ = [
    "ClientError",
    "FeatureLookupError",
    "Forbidden",
    "InvalidLabel",
    "LoginRefused",
    "ModelNotServable",
    "NotFound",
    "NotReady",
    "OnlineStoreError",
    "PredictionStoreError",
    "PromotionError",
    "PromotionRefused",
    "RegistryError",
    "RunFailed",
    "ServeError",
    "ServiceUnreachable",
    "UnknownRequestId",
    "Unreachable",
    "UntrustedModel",
    "WrongModelServed",
]


class RegistryError(RuntimeError):
    """The model registry could not be read or written: never taken as "nothing there yet"."""


class PromotionError(RuntimeError):
    """A promotion or rollback could not be carried out (e.g. rollback with no target)."""


class PromotionRefused(PromotionError):
    """The gate refused a requested promotion (a floor missed, or no better than ``@champion``)."""


class OnlineStoreError(RuntimeError):
    """The online feature store failed during a materialization: the run stops, and the chunk
    it was writing is not recorded as materialized (rerun it once the store answers)."""


class ServeError(RuntimeError):
    """A request could not be served; ``status`` is the HTTP status to answer with."""

    status = 500


class NotReady(ServeError):
    """No servable champion model is loaded (yet)."""

    status = 503


class FeatureLookupError(ServeError):
    """The online feature store could not be read."""

    status = 503


class ModelNotServable(ServeError):
    """A model cannot be served: it needs inputs nobody provides, or it is not trusted."""

    status = 500


class UntrustedModel(ModelNotServable):
    """A model artifact asks to load a type or format Airloop does not trust (no pickle)."""


class PredictionStoreError(ServeError):
    """The prediction store is unreachable or failed."""

    status = 503


class UnknownRequestId(ServeError):
    """Feedback names a request id the prediction log does not hold."""

    status = 404


class InvalidLabel(ServeError):
    """Feedback carries a label the model's task cannot take."""

    status = 400


class ServiceUnreachable(ServeError):
    """No prediction service answers at the configured URL."""

    status = 503


class WrongModelServed(ServeError):
    """The service at the configured URL serves another model than the one expected."""


# -- the airloop command's errors (raised by airloop.client) ------------------------------------


class ClientError(RuntimeError):
    """A request failed; ``str()`` is one line for people, ``exit_code`` what the command returns."""

    exit_code = 1


class Unreachable(ClientError):
    """The api-server did not answer (down, wrong URL, or a timeout)."""

    exit_code = 3


class LoginRefused(ClientError):
    """No usable credentials, a wrong password, or a token the api-server does not accept."""

    exit_code = 4


class Forbidden(ClientError):
    """Logged in, but the user's role does not allow the request (e.g. a viewer triggering a DAG)."""

    exit_code = 4


class NotFound(ClientError):
    """An unknown model, version, DAG or run."""

    exit_code = 5


class RunFailed(ClientError):
    """A triggered DAG run ended ``failed`` (or did not end in time)."""

    exit_code = 6
