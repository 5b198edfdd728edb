"""genlit.nets."""
