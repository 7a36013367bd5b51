"""The contract between the recorder, materialize, the notebooks and the tests.

One definition of each thing: the session-log Arrow schema (``schemas.log``), the exact fixed-point
units for prices and sizes (``schemas.units``), the exchange's wire formats (``schemas.wire``), the
SQL tables (``schemas.tables``), the log -> table mapping (``schemas.mapping``) and where and how
the log is stored on disk (``schemas.catalog``). Imports run one way: everything imports
``schemas``, ``schemas`` imports nothing of the project but itself.
"""

from schemas.log import (
    LOG_SCHEMA,
    SCHEMA_VERSION,
    SCHEMA_VERSION_KEY,
    Decision,
    Kind,
)
from schemas.units import PRICE_SCALE, SIZE_SCALE, parse_price, parse_size

__all__ = [
    "LOG_SCHEMA",
    "PRICE_SCALE",
    "SCHEMA_VERSION",
    "SCHEMA_VERSION_KEY",
    "SIZE_SCALE",
    "Decision",
    "Kind",
    "parse_price",
    "parse_size",
]
