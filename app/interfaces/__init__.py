"""app.interfaces."""
