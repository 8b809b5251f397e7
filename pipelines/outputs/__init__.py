"""What a segmentation run hands to people, from a label map on the input's own grid.

Every module works on a predicted integer label map indexed ``(i, j, k)`` like the image, with the
image's 4x4 voxel-to-RAS affine (mm); label 0 is background. Each writer serialises its file in
memory, writes it atomically (:func:`pipelines.io.writers.write_bytes`) and returns the
:class:`~pipelines.io.writers.Written` path and sha256 of those bytes, so no output is read back.

* :mod:`pipelines.outputs.names`: label names, display colours and SNOMED CT codes, shared by all.
* :mod:`pipelines.outputs.stats`: per-structure volume (mL), intensity statistics, bounding boxes and
  connected components (:func:`~pipelines.outputs.stats.compute_stats`), as ``stats.json`` and
  ``stats.csv`` (:func:`~pipelines.outputs.stats.write_stats`).
* :mod:`pipelines.outputs.preview`: ``preview.png`` with axial, coronal and sagittal slices through the
  largest structure, in radiological convention, with the labels overlaid.
* :mod:`pipelines.outputs.dicom_seg`: a DICOM Segmentation object (highdicom) referencing the source
  series, for PACS viewers and annotation tools.
"""
