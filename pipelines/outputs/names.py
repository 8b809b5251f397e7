"""What each structure of a label map is called, how it is drawn and how DICOM codes it.

Shared by the statistics, the preview and DICOM-SEG, so that a label has one name, one colour and one
coded concept in every output. Only numpy is imported at module level; matplotlib's colour maps are
loaded the first time a colour is asked for.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["LATERALITY", "SNOMED", "TUMOUR_ORGANS", "label_colour", "name_of", "names_by_id"]

SNOMED: dict[str, tuple[str, str]] = {
    "spleen": ("78961009", "Spleen"),
    "kidney_right": ("9846003", "Right kidney"),
    "kidney_left": ("18639004", "Left kidney"),
    "gallbladder": ("28231008", "Gallbladder"),
    "esophagus": ("32849002", "Esophagus"),
    "liver": ("10200004", "Liver"),
    "stomach": ("69695003", "Stomach"),
    "aorta": ("15825003", "Aorta"),
    "inferior_vena_cava": ("64131007", "Inferior vena cava"),
    "portal_vein": ("32764006", "Portal vein"),
    # TotalSegmentator's combined label; coded as its main part, the segment label keeps the full name.
    "portal_vein_and_splenic_vein": ("32764006", "Portal vein"),
    "pancreas": ("15776009", "Pancreas"),
    # Sided adrenal glands are coded as "Adrenal gland" plus a laterality modifier (see LATERALITY).
    "adrenal_gland_right": ("23451007", "Adrenal gland"),
    "adrenal_gland_left": ("23451007", "Adrenal gland"),
    "duodenum": ("38848004", "Duodenum"),
    "small_bowel": ("30315005", "Small intestine"),
    "colon": ("71854001", "Colon"),
    "spinal_cord": ("2748008", "Spinal cord"),
    "liver_tumor": ("108369006", "Neoplasm"),
    "tumor": ("108369006", "Neoplasm"),
}
"""Structure name -> (SNOMED CT code, code meaning) for the structures our bundles name.

Kidneys use SNOMED's sided concepts; adrenal glands use the unsided concept with a DICOM laterality
modifier; tumours are "Neoplasm" (with the organ as anatomic region where the name says which)."""

LATERALITY: dict[str, tuple[str, str, str]] = {
    "adrenal_gland_right": ("24028007", "SCT", "Right"),
    "adrenal_gland_left": ("7771000", "SCT", "Left"),
}
"""Names whose code in :data:`SNOMED` is unsided -> their laterality modifier (code value, scheme,
meaning), which DICOM-SEG adds as SegmentedPropertyTypeModifierCodeSequence (CID 244)."""

TUMOUR_ORGANS: dict[str, str | None] = {"liver_tumor": "liver", "tumor": None}
"""Tumour names -> the organ (a key of :data:`SNOMED`) they lie in, or ``None`` when the name does not say."""


def names_by_id(label_names: Mapping[int, str] | Mapping[str, str]) -> dict[int, str]:
    """Label id -> structure name with integer ids; labels.json files carry their ids as strings.

    Raises:
        TypeError: a key is not an integer label id (``"liver"``).
    """
    try:
        return {int(k): str(v) for k, v in label_names.items()}
    except (TypeError, ValueError) as err:
        raise TypeError(f"label_names: keys must be integer label ids, got {list(label_names)[:5]}") from err


def name_of(label: int, names: Mapping[int, str]) -> str:
    """The structure name of ``label``, or ``label_<id>`` for an id without one."""
    return names.get(label, f"label_{label}")


def label_colour(label: int) -> tuple[float, float, float]:
    """The fixed display colour (RGB in 0..1) of a label id, shared by the preview and DICOM-SEG.

    The table is matplotlib's tab20, tab20b and tab20c without their greys (which vanish on a
    grey-scale image): 54 colours, the saturated half of each map first, so that consecutive ids
    get clearly different colours; ids repeat every 54.
    """
    table = _colour_table()
    return table[(int(label) - 1) % len(table)]


@functools.cache
def _colour_table() -> tuple[tuple[float, float, float], ...]:
    import matplotlib as mpl  # imported here: only colours are needed, no backend is touched

    table: list[tuple[float, float, float]] = []
    for name in ("tab20", "tab20b", "tab20c"):
        colours = [tuple(float(c) for c in rgb[:3]) for rgb in mpl.colormaps[name].colors if np.ptp(rgb[:3]) > 0.05]
        table += colours[0::2] + colours[1::2]
    return tuple(table)  # type: ignore[return-value]
