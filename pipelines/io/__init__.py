"""Reading and writing volumes with their geometry.

Every reader returns a :class:`pipelines.io.readers.Volume`: a numpy array indexed ``(i, j, k)``
(the NIfTI voxel order) and a 4x4 affine from voxel indices to RAS world coordinates in mm, the
convention of nibabel and of MONAI's ``MetaTensor``. Import from the modules (``readers``,
``dicom``, ``hashing``, ``writers``); this package file imports nothing, so that a command that
only parses its arguments pays for nothing.
"""
