"""Adult anatomical sizes the ``anatomy="body"`` phantoms are drawn from (pure data, with sources).

Each entry is a fact from the literature (rounded; ranges are the spread of healthy adults, not
pathological limits) that :mod:`pipelines.data.phantoms.body` and :mod:`pipelines.data.phantoms.head`
use to size the shapes they draw, and that the tests check the rendered organs against. Volumes in mL,
lengths in mm. Where a study reports mean ± SD, the range is about mean ± 2 SD.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FACTS", "PATIENT_SIZES", "Fact"]


@dataclass(frozen=True)
class Fact:
    """A range of a size in healthy adults and where it comes from."""

    low: float
    high: float
    unit: str
    source: str


FACTS: dict[str, Fact] = {
    # --- organ volumes (what the tests measure on the label map) ---
    "liver_volume": Fact(
        1100,
        2000,
        "mL",
        "Urata et al. 1995, Hepatology 21:1317 (standard liver volume = 706.2 x BSA + 2.4 mL, BSA 1.5-2.2 m2 "
        "-> about 1.1-1.6 L); Heinemann et al. 1999, Liver Transpl 5:366 (autopsy liver mass 1.4-1.8 kg)",
    ),
    "liver_span": Fact(
        110,
        175,
        "mm",
        "Kratzer et al. 2003, J Ultrasound Med 22:1155 (2080 adults: midclavicular craniocaudal span 14.0 +/- 1.7 cm)",
    ),
    "spleen_volume": Fact(
        100,
        320,
        "mL",
        "Prassopoulos et al. 1997, Eur Radiol 7:246 (CT, 140 adults: mean 215 mL, range 107-314 mL)",
    ),
    "spleen_length": Fact(
        80, 130, "mm", "Loftus & Metreweli 1998, Br J Radiol 71:1170 (normal adult spleen length up to 12-13 cm)"
    ),
    "kidney_length": Fact(
        95,
        125,
        "mm",
        "Emamian et al. 1993, AJR 160:83 (665 adults: mean length 11.2 cm left, 10.9 cm right, SD ~1 cm)",
    ),
    "kidney_volume": Fact(
        100, 250, "mL", "CT/MR renal volumetry in healthy adults: about 150-170 mL per kidney, SD 30-40 mL"
    ),
    "perirenal_fat_thickness": Fact(
        3,
        30,
        "mm",
        "Davidiuk et al. 2014, Eur Urol 66:1165 (Mayo adhesive probability score: posterior perinephric fat "
        "thickness on CT graded < 10, 10-19 and >= 20 mm in adults)",
    ),
    "pancreas_volume": Fact(
        40, 120, "mL", "Saisho et al. 2007, Clin Anat 20:933 (CT, adults 20-60 y: about 72 +/- 20 mL)"
    ),
    "gallbladder_volume": Fact(
        10, 70, "mL", "fasting gallbladder: about 20-50 mL; length 7-10 cm, diameter up to 4 cm (radiology texts)"
    ),
    "adrenal_volume": Fact(2, 10, "mL", "CT adrenal volumetry in adults: about 4-6 mL per gland; limbs < 10 mm thick"),
    "bladder_volume": Fact(50, 450, "mL", "urinary bladder: capacity 400-600 mL; a scan finds it anywhere below"),
    "lung_volume": Fact(
        1500, 3800, "mL", "inspiratory CT lung volume of healthy adults: 4-7 L for both lungs, right about 55 %"
    ),
    "brain_volume": Fact(
        1000, 1500, "mL", "adult brain parenchyma (grey + white matter) about 1.1-1.4 L; intracranial volume 1.2-1.7 L"
    ),
    "lateral_ventricles_volume": Fact(
        7, 60, "mL", "lateral ventricles of adults: about 10-30 mL, growing with age (MR volumetry studies)"
    ),
    # --- calibres ---
    "aorta_diameter": Fact(
        16,
        26,
        "mm",
        "Wanhainen et al. 2019, ESVS AAA guidelines (normal infrarenal aorta about 2 cm; aneurysm >= 3 cm)",
    ),
    "ivc_diameter": Fact(15, 28, "mm", "infrarenal inferior vena cava, supine adults (CT/US): about 2 cm"),
    "portal_vein_diameter": Fact(8, 13, "mm", "Weinreb et al. 1982, AJR 139:497 (normal portal vein <= 13 mm)"),
    # --- skeleton ---
    "lumbar_vertebra_height": Fact(24, 30, "mm", "lumbar vertebral body height about 25-30 mm, width 40-50 mm"),
    "lumbar_disc_height": Fact(8, 13, "mm", "lumbar intervertebral disc height about 8-12 mm"),
    "thoracic_vertebra_height": Fact(17, 24, "mm", "thoracic vertebral body height about 18-23 mm"),
    # --- body wall ---
    "subcutaneous_fat_thickness": Fact(
        3, 80, "mm", "abdominal subcutaneous fat (CT/US at the umbilicus): about 5-10 mm slim, > 40 mm obese"
    ),
    "abdominal_width": Fact(250, 420, "mm", "transverse abdominal diameter of adults at L3-L4 on CT"),
    # --- brain tumour (glioblastoma) ---
    "tumor_diameter": Fact(
        15, 70, "mm", "glioblastoma at diagnosis: enhancing diameter about 2-6 cm (e.g. BraTS cohorts)"
    ),
    "edema_margin": Fact(5, 30, "mm", "peritumoral T2/FLAIR oedema extends about 0.5-3 cm beyond the rim"),
    "skull_thickness": Fact(4, 10, "mm", "adult calvarial thickness about 5-8 mm (CT studies)"),
}
"""Literature sizes, keyed by what they measure."""

PATIENT_SIZES: dict[str, tuple[float, float]] = {
    "slim": (0.0, 0.25),
    "average": (0.25, 0.5),
    "overweight": (0.5, 0.75),
    "obese": (0.75, 1.0),
}
"""Patient size classes as ranges of a 0..1 habitus index; the index sets subcutaneous fat thickness
(about 4 mm at 0 to 70 mm at 1, per :data:`FACTS` ``subcutaneous_fat_thickness``) and visceral fat."""
