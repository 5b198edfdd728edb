"""genlit: a PyTorch Lightning research framework for generative models."""
