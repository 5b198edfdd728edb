"""genlit.callbacks."""
