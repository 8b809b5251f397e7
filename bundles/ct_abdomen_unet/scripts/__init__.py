"""Custom code of this bundle, imported by its configs (the MONAI Model Zoo convention: ``scripts/``)."""
