"""The ``medseg`` command line: parse, set up logging, call the library, report.

``main`` is in :mod:`pipelines.cli.main`; each subcommand group with many options has its module.
"""
