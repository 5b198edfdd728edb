"""genlit.families."""
