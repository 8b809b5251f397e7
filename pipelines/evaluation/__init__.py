"""Evaluation of shipped bundles on the real scans beside the project, scored in physical space."""
