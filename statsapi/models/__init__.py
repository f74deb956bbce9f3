"""Tables: users, records, audit events, token families, idempotency keys, currencies."""

from .audit import AuditEvent
from .currency import Currency
from .idempotency import IdempotencyKey
from .record import Record, RecordData, RecordRow
from .token import TokenFamily
from .user import ROLES, Role, User

__all__ = [
    "ROLES",
    "AuditEvent",
    "Currency",
    "IdempotencyKey",
    "Record",
    "RecordData",
    "RecordRow",
    "Role",
    "TokenFamily",
    "User",
]
