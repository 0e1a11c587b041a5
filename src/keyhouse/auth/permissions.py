"""Permissions, resources and the system roles, as ClickHouse Cloud defines them.

A policy is ``{"allowDeny": "ALLOW"|"DENY", "permissions": [...], "resources": [...]}``;
resources are ``organization/<uuid>``, ``instance/<uuid>`` or ``instance/*``. System roles are
defined here as policy templates and seeded into every organization.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from typing import Any


class Permission(enum.StrEnum):
    ORGANIZATION_VIEW = "control-plane:organization:view"
    ORGANIZATION_MANAGE = "control-plane:organization:manage"
    ORGANIZATION_MANAGE_BILLING = "control-plane:organization:manage-billing"
    ORGANIZATION_VIEW_BILLING = "control-plane:organization:view-billing"
    ORGANIZATION_VIEW_API_KEYS = "control-plane:organization:view-api-keys"
    ORGANIZATION_CREATE_API_KEYS = "control-plane:organization:create-api-keys"
    ORGANIZATION_UPDATE_API_KEYS = "control-plane:organization:update-api-keys"
    ORGANIZATION_DELETE_API_KEYS = "control-plane:organization:delete-api-keys"
    ORGANIZATION_VIEW_ACTIVITIES = "control-plane:organization:view-activities"
    ORGANIZATION_CREATE_SERVICE = "control-plane:organization:create-service"
    SERVICE_VIEW = "control-plane:service:view"
    SERVICE_MANAGE = "control-plane:service:manage"
    SERVICE_DELETE = "control-plane:service:delete"
    SERVICE_VIEW_BACKUPS = "control-plane:service:view-backups"
    SERVICE_MANAGE_BACKUPS = "control-plane:service:manage-backups"
    SERVICE_MANAGE_IP_ACCESS_LIST = "control-plane:service:manage-ip-access-list"
    SERVICE_VIEW_QUERY_API_ENDPOINTS = "control-plane:service:view-query-api-endpoints"
    SERVICE_MANAGE_QUERY_API_ENDPOINTS = "control-plane:service:manage-query-api-endpoints"
    SERVICE_VIEW_PRIVATE_ENDPOINTS = "control-plane:service:view-private-endpoints"
    SERVICE_MANAGE_PRIVATE_ENDPOINTS = "control-plane:service:manage-private-endpoints"
    SERVICE_VIEW_SCALING_CONFIG = "control-plane:service:view-scaling-config"
    SERVICE_MANAGE_SCALING_CONFIG = "control-plane:service:manage-scaling-config"
    SQL_CONSOLE_DATABASE_ACCESS = "sql-console:database:access"


ORGANIZATION_PERMISSIONS = frozenset(p for p in Permission if ":organization:" in p)
SERVICE_PERMISSIONS = frozenset(p for p in Permission if p not in ORGANIZATION_PERMISSIONS)
VIEW_ORGANIZATION_PERMISSIONS = frozenset(
    {
        Permission.ORGANIZATION_VIEW,
        Permission.ORGANIZATION_VIEW_API_KEYS,
        Permission.ORGANIZATION_VIEW_ACTIVITIES,
        Permission.ORGANIZATION_VIEW_BILLING,
    }
)
VIEW_SERVICE_PERMISSIONS = frozenset(
    {
        Permission.SERVICE_VIEW,
        Permission.SERVICE_VIEW_BACKUPS,
        Permission.SERVICE_VIEW_QUERY_API_ENDPOINTS,
        Permission.SERVICE_VIEW_PRIVATE_ENDPOINTS,
        Permission.SERVICE_VIEW_SCALING_CONFIG,
    }
)

ALL_INSTANCES = "instance/*"


def organization_resource(organization_id: uuid.UUID) -> str:
    return f"organization/{organization_id}"


def instance_resource(service_id: uuid.UUID) -> str:
    return f"instance/{service_id}"


@dataclass(frozen=True)
class SystemRole:
    name: str
    # (permissions, scope) where scope is "organization" or "instances"
    grants: tuple[tuple[frozenset[Permission], str], ...]
    legacy_name: str | None = None

    def policies(self, organization_id: uuid.UUID) -> list[dict[str, Any]]:
        policies = []
        for index, (permissions, scope) in enumerate(self.grants):
            resource = (
                organization_resource(organization_id) if scope == "organization" else ALL_INSTANCES
            )
            policies.append(
                {
                    "id": str(uuid.uuid5(organization_id, f"{self.name}/{index}")),
                    "allowDeny": "ALLOW",
                    "permissions": sorted(permissions),
                    "resources": [resource],
                }
            )
        return policies


ADMIN = "Admin"
DEVELOPER = "Developer"
BASIC_SERVICE_API_READER = "Basic service API reader"
MEMBER = "Member"

SYSTEM_ROLES: tuple[SystemRole, ...] = (
    # Everything, on the organization and on every service, so Admin can grant any role.
    SystemRole(
        ADMIN,
        (
            (frozenset(Permission), "organization"),
            (frozenset(Permission), "instances"),
        ),
        legacy_name="admin",
    ),
    # Read-only: sees the organization, its keys, activities and services, changes nothing.
    SystemRole(
        DEVELOPER,
        ((VIEW_ORGANIZATION_PERMISSIONS, "organization"), (VIEW_SERVICE_PERMISSIONS, "instances")),
        legacy_name="developer",
    ),
    SystemRole(
        "Billing",
        (
            (
                frozenset(
                    {
                        Permission.ORGANIZATION_VIEW,
                        Permission.ORGANIZATION_VIEW_BILLING,
                        Permission.ORGANIZATION_MANAGE_BILLING,
                    }
                ),
                "organization",
            ),
        ),
    ),
    SystemRole(
        "Org API reader",
        (
            (
                frozenset({Permission.ORGANIZATION_VIEW, Permission.ORGANIZATION_VIEW_API_KEYS}),
                "organization",
            ),
        ),
    ),
    # Sign-in only: no control-plane permission at all.
    SystemRole(MEMBER, ()),
    SystemRole("Service admin", ((SERVICE_PERMISSIONS, "instances"),)),
    SystemRole("Service reader", ((VIEW_SERVICE_PERMISSIONS, "instances"),)),
    SystemRole(
        "Service API admin",
        (
            (
                frozenset(
                    {
                        Permission.SERVICE_VIEW,
                        Permission.SERVICE_VIEW_QUERY_API_ENDPOINTS,
                        Permission.SERVICE_MANAGE_QUERY_API_ENDPOINTS,
                    }
                ),
                "instances",
            ),
        ),
    ),
    SystemRole(
        "Service API reader",
        (
            (
                frozenset(
                    {
                        Permission.SERVICE_VIEW,
                        Permission.SERVICE_VIEW_QUERY_API_ENDPOINTS,
                    }
                ),
                "instances",
            ),
        ),
    ),
    # "Query Endpoints": sees the services' Query API endpoints; running queries through one
    # comes from the endpoint's binding (its openApiKeys), not from this role.
    SystemRole(
        BASIC_SERVICE_API_READER,
        ((frozenset({Permission.SERVICE_VIEW_QUERY_API_ENDPOINTS}), "instances"),),
        legacy_name="query_endpoints",
    ),
)

SYSTEM_ROLES_BY_NAME = {role.name: role for role in SYSTEM_ROLES}
# Legacy key roles ("roles" on the wire) and the system roles they stand for.
LEGACY_ROLE_TO_SYSTEM = {role.legacy_name: role.name for role in SYSTEM_ROLES if role.legacy_name}
SYSTEM_TO_LEGACY_ROLE = {name: legacy for legacy, name in LEGACY_ROLE_TO_SYSTEM.items()}
