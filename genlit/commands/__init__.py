"""The commands beside LightningCLI's: ``genlit sample``, ``genlit evaluate`` and ``genlit plot``; the run folders
(which one a launch writes, its metrics record); and the one-line error handling every ``genlit`` command shares."""
