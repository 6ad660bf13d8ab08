"""Python client for Docnum: unique, formatted, sequential document numbers over HTTP.

from docnum_client import DocnumClient

with DocnumClient("http://localhost:8000", "dn_...") as docnum:
    number = docnum.next("invoice").number   # 'INV-2026-000123'
"""

from docnum_client._core import __version__
from docnum_client.client import AsyncDocnumClient, DocnumClient
from docnum_client.errors import (
    AlreadyVoided,
    Conflict,
    DocnumError,
    Forbidden,
    IdempotencyKeyInFlight,
    IdempotencyKeyReused,
    InvalidRequest,
    LedgerDisabled,
    MalformedRequest,
    NotFound,
    NotGapless,
    NumberNotFound,
    Overloaded,
    SeriesArchived,
    SeriesExhausted,
    SeriesNotFound,
    ServiceUnreachable,
    Unauthorized,
    Unavailable,
)
from docnum_client.models import IssuedBatch, IssuedNumber, LedgerEntry

__all__ = [
    "AlreadyVoided",
    "AsyncDocnumClient",
    "Conflict",
    "DocnumClient",
    "DocnumError",
    "Forbidden",
    "IdempotencyKeyInFlight",
    "IdempotencyKeyReused",
    "InvalidRequest",
    "IssuedBatch",
    "IssuedNumber",
    "LedgerDisabled",
    "LedgerEntry",
    "MalformedRequest",
    "NotFound",
    "NotGapless",
    "NumberNotFound",
    "Overloaded",
    "SeriesArchived",
    "SeriesExhausted",
    "SeriesNotFound",
    "ServiceUnreachable",
    "Unauthorized",
    "Unavailable",
    "__version__",
]
