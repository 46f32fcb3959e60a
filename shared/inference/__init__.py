"""Model code: gate, identifier, masker, pipeline and bundles.

Only workers and the offline CLI import this package; the API never does.
"""
