"""genlit.data."""
