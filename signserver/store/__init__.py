"""Persistence: SQLAlchemy Core tables, Alembic migrations, the database connection."""
