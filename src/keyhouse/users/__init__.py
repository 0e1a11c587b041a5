"""People who sign in: email (lowercase, unique), name, argon2id password hash."""
