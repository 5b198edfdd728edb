"""The commands beside LightningCLI's: ``genlit sample`` and ``genlit evaluate``, and the one-line error
handling every ``genlit`` command shares."""
