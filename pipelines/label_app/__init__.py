"""The MONAI Label app that serves medseg bundles: one infer and one train task per bundle."""
