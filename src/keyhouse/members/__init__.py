"""Organization members: the people in an organization and their roles."""
