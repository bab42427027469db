"""Bottom layer: settings, models, the database, crypto, logs and domain errors (imports no other layer)."""
