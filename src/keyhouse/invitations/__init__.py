"""Invitations: ask someone by email to join an organization with given roles."""
