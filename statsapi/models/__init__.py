"""Tables: users, records, audit events, token families, idempotency keys, currencies, deployment,
record quota usage, schema compatibility."""

from .audit import AuditEvent
from .compatibility import SchemaCompatibility
from .currency import Currency
from .deployment import Deployment
from .idempotency import IdempotencyKey
from .quota import RecordQuotaUsage
from .record import Record, RecordData, RecordRow
from .token import TokenFamily
from .user import ROLES, Role, User

__all__ = [
    "ROLES",
    "AuditEvent",
    "Currency",
    "Deployment",
    "IdempotencyKey",
    "Record",
    "RecordData",
    "RecordQuotaUsage",
    "RecordRow",
    "Role",
    "SchemaCompatibility",
    "TokenFamily",
    "User",
]
