"""What every spec part shares: the error, the strict model base, names and column types."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict

__all__ = ["LOWER_SNAKE_NAME", "ColumnType", "SpecError", "StrictSpec"]

ColumnType = Literal["string", "int", "float", "timestamp"]
# Names that become directories, file prefixes, DAG ids and registry names.
LOWER_SNAKE_NAME = re.compile(r"^[a-z][a-z0-9_]{1,62}$")


class SpecError(ValueError):
    """A model spec file is missing, unreadable or invalid."""


class StrictSpec(BaseModel):
    """A frozen part of a spec that refuses keys it does not declare (a typo is an error)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
