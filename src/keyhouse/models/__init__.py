"""All tables, sharing one metadata (``keyhouse.db.Base.metadata``)."""

from keyhouse.db import Base
from keyhouse.models.activity import Activity
from keyhouse.models.api_key import ApiKey
from keyhouse.models.backup import Backup, ServiceUsage
from keyhouse.models.console_session import ConsoleSession
from keyhouse.models.host import EngineHost, HostToken, SchedulerLease
from keyhouse.models.invitation import Invitation
from keyhouse.models.organization import Organization
from keyhouse.models.role import Role, RoleAssignment
from keyhouse.models.service import (
    EngineLease,
    QueryApiEndpoint,
    QueryApiEndpointKey,
    SavedQuery,
    Service,
    ServiceQueryEndpoint,
)
from keyhouse.models.user import Membership, User

# Core handles on the same tables, for the hot read paths that skip the ORM.
API_KEYS = Base.metadata.tables[ApiKey.__tablename__]
ROLES = Base.metadata.tables[Role.__tablename__]
ROLE_ASSIGNMENTS = Base.metadata.tables[RoleAssignment.__tablename__]

__all__ = [
    "API_KEYS",
    "ROLES",
    "ROLE_ASSIGNMENTS",
    "Activity",
    "ApiKey",
    "Backup",
    "ConsoleSession",
    "EngineHost",
    "EngineLease",
    "HostToken",
    "Invitation",
    "Membership",
    "Organization",
    "QueryApiEndpoint",
    "QueryApiEndpointKey",
    "Role",
    "RoleAssignment",
    "SavedQuery",
    "SchedulerLease",
    "Service",
    "ServiceQueryEndpoint",
    "ServiceUsage",
    "User",
]
