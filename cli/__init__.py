"""The ``whales`` command line."""
