"""MONAI bundles in the Model Zoo layout: find, open, parse, load weights, check conformance.

Import from the modules; this package file imports nothing (no torch or MONAI at import time).
"""
