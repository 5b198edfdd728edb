"""genlit.objectives."""
