"""The commands beside LightningCLI's: ``genlit sample``, ``genlit evaluate``, ``genlit plot``, ``genlit translate``
and ``genlit encode``; the run folders (which one a launch writes, its metrics record); and the one-line error
handling every ``genlit`` command shares."""
