"""genlit.metrics."""
