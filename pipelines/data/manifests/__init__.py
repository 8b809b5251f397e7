"""Data manifests: which cases a study holds, checked before any of them is processed.

A manifest is a JSON file in the shape of a Medical Segmentation Decathlon ``dataset.json``::

    {
      "name": "liver phantoms",
      "modality": {"0": "CT"},                 # or a plain string "CT"
      "labels": {"0": "background", "1": "liver"},
      "description": "optional free text",
      "training":   [{"image": "imagesTr/a.nii.gz", "label": "labelsTr/a.nii.gz"}, ...],
      "validation": [...],
      "test":       ["imagesTs/c.nii.gz", {"image": ["c_t1.nii.gz", "c_t2.nii.gz"]}, ...]
    }

Each entry is either an image path or an object with ``image`` (one path, or a list of paths
stacked as channels), an optional ``label`` and an optional ``case_id``. Paths are relative to the
folder that holds the manifest and must stay inside it (paths outside that folder, absolute
ones included, only with ``allow_outside_paths`` / ``--allow-outside-paths``). An image path may
also name a folder holding one DICOM series.

Modules (import names from the one that defines them; this package imports nothing):

- :mod:`~pipelines.data.manifests.schema`: the JSON Schema (draft 2020-12), written once in
  ``schema.json`` beside it (``data_manifests/schema.json`` links to that file), and its messages.
- :mod:`~pipelines.data.manifests.model`: ``Case``, ``Manifest``, ``Problem``, ``ManifestError``;
  ``load_manifest`` (structure only, no image opened), path resolution, ``write_manifest``.
- :mod:`~pipelines.data.manifests.validate`: ``validate_manifest`` opens the files and reports
  every problem at once (missing files, label values, grids).
- :mod:`~pipelines.data.manifests.create`: ``create_manifest`` from a folder layout or templates.
- :mod:`~pipelines.data.manifests.split`: ``split_manifest``, k-fold cross-validation manifests.
- :mod:`~pipelines.data.manifests.datalist`: a MONAI Model Zoo datalist (``{"testing": [...]}``)
  read as a manifest, paths relative to its ``dataset_dir``; ``load_cases_file`` takes either.
"""
