"""Alembic migrations of the management server's database (script_location)."""
