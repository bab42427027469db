"""app.foundation."""
