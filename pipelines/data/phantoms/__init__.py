"""Synthetic CT and MR volumes with their truth label maps.

The phantoms serve the demo, the training of our bundles, the tests and the benchmarks: every one is
reproducible from an integer seed, looks like the real thing closely enough for a small U-Net to
learn from it, and comes with an exact label map and a correct voxel-to-world affine.

Modules (import names from the one that defines them):

- :mod:`~pipelines.data.phantoms.make`: :class:`Phantom` and the factories ``make_ct_phantom``,
  ``make_mr_phantom``, ``make_brain_tumor_phantom``, with their argument checks;
- :mod:`~pipelines.data.phantoms.write`: ``write_nifti``, ``write_nifti_channels``, ``write_dicom_series``;
- :mod:`~pipelines.data.phantoms.tissues`: structure ids (``CT_STRUCTURES``, ``BRAIN_STRUCTURES``),
  ``MR_CONTRASTS``, tissue classes and intensity tables;
- :mod:`~pipelines.data.phantoms.abdomen` and :mod:`~pipelines.data.phantoms.brain`: the anatomy;
- :mod:`~pipelines.data.phantoms.shapes`: canonical grid, ellipsoids, tubes, smooth warps;
- :mod:`~pipelines.data.phantoms.render`: painting shapes into tissue/label maps, blur and noise.
- ``anatomy="body"`` (opt-in; the default "classic" phantoms are unchanged, bit for bit):
  :mod:`~pipelines.data.phantoms.body` and :mod:`~pipelines.data.phantoms.body_paint` (a real-size adult
  trunk, chest to pelvis, with a field of view placed on a region and cut at its edge, patient sizes),
  :mod:`~pipelines.data.phantoms.head` (real-size head, tumour anywhere in the hemispheres) and
  :mod:`~pipelines.data.phantoms.anatomy_facts` (the literature sizes they draw from, with sources).

How a phantom is built:

1. The requested ``shape`` / ``spacing_mm`` / ``orientation`` is turned into a *canonical* RAS
   grid (axis 0 towards the patient's Right, 1 Anterior, 2 Superior), centred on the world origin.
2. Anatomy is drawn from the seed as analytic shapes in world millimetres: randomly deformed
   ellipsoids (low-order radius modulation) and tubes along poly-lines, bent by one smooth random
   displacement field and scaled to fit the field of view. Shapes are painted, in anatomical order,
   into a *tissue* map and a label map, one slab of slices at a time to keep memory bounded.
3. The tissue map becomes intensities through a per-case look-up table (CT Hounsfield units or
   T1-like MR signal), then partial-volume blur, bias field (MR) and noise are applied.
4. The arrays are reoriented to the requested axis codes with :mod:`nibabel.orientations`, so the
   anatomy is the same in physical space whatever the array layout.

Random streams: the seed feeds a :class:`numpy.random.SeedSequence` whose children drive, in this
order, the anatomy, the liver lesions, the intensities and the noise. For a given field of view
the anatomy of a seed is therefore the same for CT and MR, with and without lesions, at any
spacing and in every orientation.
"""
