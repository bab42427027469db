"""app.mechanisms."""
