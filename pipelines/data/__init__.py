"""Data: study manifests (schema, validation, creation, splits) and synthetic phantoms."""
