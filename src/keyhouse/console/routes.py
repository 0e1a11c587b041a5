"""The console's routes, one module per page family, under ``/console``."""

from __future__ import annotations

from fastapi import APIRouter

from keyhouse.console import entry, keys, members, organization, service_admin, services

router = APIRouter(include_in_schema=False)
for module in (entry, keys, members, organization, services, service_admin):
    router.include_router(module.router, include_in_schema=False)
