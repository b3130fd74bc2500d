"""The RA's own database (SQLite by default, PostgreSQL supported), with its own migrations."""
