"""Use cases of the service. No Flask here: callers pass the database and settings."""
