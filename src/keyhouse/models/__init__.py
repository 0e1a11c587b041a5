"""All tables, sharing one metadata (``keyhouse.db.Base.metadata``)."""

from keyhouse.models.activity import Activity
from keyhouse.models.api_key import ApiKey
from keyhouse.models.console_session import ConsoleSession
from keyhouse.models.invitation import Invitation
from keyhouse.models.organization import Organization
from keyhouse.models.role import Role, RoleAssignment
from keyhouse.models.user import Membership, User

__all__ = [
    "Activity",
    "ApiKey",
    "ConsoleSession",
    "Invitation",
    "Membership",
    "Organization",
    "Role",
    "RoleAssignment",
    "User",
]
