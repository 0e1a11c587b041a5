"""Roles: the system roles seeded per organization, and role assignments to actors."""
