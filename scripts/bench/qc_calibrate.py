#!/usr/bin/env python
"""Choose a bundle's per-structure confidence thresholds (``medseg_qc.structures``) on calibration phantoms.

The phantoms are the QC benchmark's (``qc_signals.py``: clean, graded noise, blur, low dose,
intensity shift and truncated field of view, an MR image and a head-only CT) but made from the
**validation seeds** (``SEEDS["validation"]``, 10000 on), which are disjoint from the benchmark's
evaluation seeds (``SEEDS["test"]``, 50000 on): the thresholds are never chosen on the cases that
measure them. Only phantoms are used, never real scans.

For each structure and each of ``min_confidence``, ``max_high_entropy_fraction`` and
``max_removed_fraction`` (fragmentation) it chooses the threshold that best separates the
structure's values on bad calibration cases from those on good
ones (Youden's J, the flag firing on bad cases minus on good ones), among the thresholds that flag
at most ``--max-false-rate`` of the good cases (a false "do not trust" costs a review); a bad case
is the benchmark's (mean organ Dice < 0.7, or a wrong input). A structure seen on no bad case gets
a threshold just outside every good case's value. A chosen value only ever *relaxes* the bundle's
case-wide one (``--allow-tighter`` lifts this): the point of per-structure values is to stop flagging
structures whose good results look different (a small lesion is mostly boundary), and a tighter
value fitted on a dozen good calibration cases would be fitted to their noise (a removed fraction of
0.6 % for the liver, say). The case-wide values stay for structures the calibration did not see.

    .venv/bin/python scripts/bench/qc_calibrate.py --seeds 3 --json qc_calibration.json --write  # ~12 min, 2 cores
    .venv/bin/python scripts/bench/qc_calibrate.py --from-json qc_calibration.json --write       # no rerun
    .venv/bin/python scripts/bench/qc_calibrate.py --bundle bundles/ct_multiorgan_unetr --perirenal-fat --json out.json

``--perirenal-fat`` draws the calibration phantoms with the kidneys and adrenal glands in their perirenal
fat: the anatomy of a bundle whose recipe trains on it (the UNETR's), so that its thresholds are
chosen on the cases it was made for and not on anatomy it never saw. Before such thresholds replace
the ones in use, ``qc_signals.py --perirenal-fat`` should show on held-out phantoms that they flag the
bad results at least as well (for the UNETR they were looser nearly everywhere and are not written yet).

``--write`` puts the thresholds into the bundle's ``configs/metadata.json`` (``medseg_qc.structures``,
only that block is rewritten) and a table with the command into ``docs/README.md`` (between
``<!-- qc-calibration -->`` markers).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the benchmark's phantoms and scoring, one definition

import qc_signals

REPO = qc_signals.REPO
MARK = "<!-- qc-calibration -->"
FAT_PHRASE = " with the kidneys and adrenal glands in their perirenal fat"
METRICS = (
    ("min_confidence", "confidence", -1),
    ("max_high_entropy_fraction", "high_entropy_fraction", +1),
    ("max_removed_fraction", "removed_fraction", +1),
)
"""(threshold key, stats column, direction): -1 flags values below the threshold, +1 above it."""


def collect(bundle: Path, seeds: list[int], *, perirenal_fat: bool = False) -> list[dict[str, Any]]:
    """Segment every calibration case; one row per case (see ``qc_signals.run_case``) with ``bad``."""
    import torch

    from pipelines.segment import Segmenter, SegmentOptions

    torch.manual_seed(0)
    segmenter = Segmenter(bundle, SegmentOptions(device="cpu", outputs=("labels",), tta="none"))
    labels = {k: v for k, v in segmenter.bundle.labels.items() if k}
    rows = []
    with tempfile.TemporaryDirectory(prefix="qc_calibrate_") as tmp:
        for name, phantom, wrong_input in qc_signals.cases(seeds, labels, perirenal_fat=perirenal_fat):
            row = qc_signals.run_case(segmenter, phantom, name, Path(tmp), labels)
            row["bad"] = wrong_input or row["mean_organ_dice"] < qc_signals.BAD_DICE
            rows.append(row)
            print(f"{name:<22} dice {row['mean_organ_dice']:.3f} bad {int(row['bad'])}", flush=True)
    return rows


def choose(good: list[float], bad: list[float], direction: int, max_false_rate: float) -> dict[str, float]:
    """The threshold for one structure and metric, with its rates on the calibration cases.

    ``direction`` -1: the flag fires for a value below the threshold; +1: above it. Candidates are the
    midpoints between neighbouring observed values (and just outside the extremes).
    """
    values = sorted(set(good + bad))
    margin = 0.005
    candidates = [values[0] - margin, values[-1] + margin] + [(a + b) / 2 for a, b in itertools.pairwise(values)]

    def rates(t: float) -> tuple[float, float]:
        fires = (lambda v: v < t) if direction < 0 else (lambda v: v > t)
        hit = sum(map(fires, bad)) / len(bad) if bad else 0.0
        false = sum(map(fires, good)) / len(good) if good else 0.0
        return hit, false

    best: tuple[float, float, float] | None = None
    for t in candidates:
        hit, false = rates(t)
        if false > max_false_rate:
            continue
        # Youden's J, ties to the most lenient threshold (fewest flags)
        key = (hit - false, direction * t)
        if best is None or key > (best[1] - best[2], direction * best[0]):
            best = (t, hit, false)
    if best is None or best[1] == 0.0:  # nothing to catch here: just outside every good value
        t = (min(good) - margin) if direction < 0 else (max(good) + margin)
        best = (t, *rates(t))
    t, hit, false = best
    return {"threshold": round(min(max(t, 0.0), 1.0), 3), "bad_flagged": hit, "good_flagged": false}


def calibrate(
    rows: list[dict[str, Any]], max_false_rate: float, case_wide: dict[str, float] | None = None
) -> dict[str, dict[str, Any]]:
    """``{structure: {threshold key: {threshold, bad_flagged, good_flagged, n_good, n_bad, fitted}}}``.

    With ``case_wide`` (threshold key -> the bundle's case-wide value) a fitted value stricter than
    the case-wide one is replaced by it (``fitted`` keeps what the data chose).
    """
    names = sorted({s["name"] for r in rows for s in r["structures"]})
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        for key, column, direction in METRICS:
            good, bad = [], []
            for row in rows:
                for s in row["structures"]:
                    if s["name"] == name and s.get(column) is not None:
                        (bad if row["bad"] else good).append(float(s[column]))
            if not good:
                continue  # never on a good case: keep the case-wide threshold
            chosen = choose(good, bad, direction, max_false_rate) | {"n_good": len(good), "n_bad": len(bad)}
            chosen["fitted"] = chosen["threshold"]
            if case_wide is not None and key in case_wide:
                loosest = min if direction < 0 else max
                if loosest(chosen["threshold"], case_wide[key]) != chosen["threshold"]:
                    t = case_wide[key]  # tighter than the case-wide value: keep that, with its own rates
                    fires = (
                        [(v < t) if direction < 0 else (v > t) for v in bad],
                        [(v < t) if direction < 0 else (v > t) for v in good],
                    )
                    chosen |= {
                        "threshold": t,
                        "bad_flagged": sum(fires[0]) / len(bad) if bad else 0.0,
                        "good_flagged": sum(fires[1]) / len(good),
                    }
            out.setdefault(name, {})[key] = chosen
    return out


def _qc_block(qc: dict[str, Any], indent: str) -> str:
    """``"medseg_qc": {...}`` with one key a line (values compact), as the hand-kept metadata files are."""
    inner = indent * 2

    def value(key: str, v: Any) -> str:
        if key != "structures" or not v:
            return json.dumps(v)
        rows = [f"{inner}{indent}{json.dumps(name)}: {json.dumps(t)}" for name, t in v.items()]
        return "{\n" + ",\n".join(rows) + f"\n{inner}}}"  # one structure a line

    lines = [f"{inner}{json.dumps(k)}: {value(k, v)}" for k, v in qc.items()]
    return f'{indent}"medseg_qc": {{\n' + ",\n".join(lines) + f"\n{indent}}}"


def write_metadata(bundle: Path, structures: dict[str, dict[str, float]]) -> Path:
    """Replace ``medseg_qc.structures`` in the bundle's metadata.json, leaving every other line as it is."""
    path = bundle / "configs" / "metadata.json"
    text = path.read_text(encoding="utf-8")
    data = json.loads(text)
    qc = dict(data.get("medseg_qc", {}))
    qc["structures"] = structures
    lines = text.splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line.lstrip().startswith('"medseg_qc"'))
    indent = lines[start][: len(lines[start]) - len(lines[start].lstrip())]
    end = next(i for i in range(start + 1, len(lines)) if lines[i].rstrip().rstrip(",") == indent + "}")
    comma = "," if lines[end].rstrip().endswith(",") else ""
    new = "".join(lines[:start]) + _qc_block(qc, indent) + comma + "\n" + "".join(lines[end + 1 :])
    check = json.loads(new)
    if check["medseg_qc"] != qc or {k: v for k, v in check.items() if k != "medseg_qc"} != {
        k: v for k, v in data.items() if k != "medseg_qc"
    }:
        raise RuntimeError(f"{path}: rewriting the medseg_qc block changed something else; nothing written")
    from pipelines.io.writers import atomic_path

    with atomic_path(path) as tmp:
        Path(tmp).write_text(new, encoding="utf-8")
    return path


def write_docs(
    bundle: Path,
    table: dict[str, dict[str, Any]],
    command: str,
    seeds: list[int],
    n_cases: int,
    *,
    perirenal_fat: bool = False,
) -> Path:
    """The calibration table and the command that made it, between the markers of the bundle's docs/README.md."""
    path = bundle / "docs" / "README.md"
    text = path.read_text(encoding="utf-8")
    rows = [
        f"| {name} | `{key}` | {c['threshold']:g} | {c.get('fitted', c['threshold']):g} | "
        f"{c['bad_flagged']:.0%} of {c['n_bad']} | "
        f"{c['good_flagged']:.0%} of {c['n_good']} |"
        for name, keys in table.items()
        for key, c in keys.items()
    ]
    section = (
        f"{MARK}\n## QC thresholds per structure (calibrated)\n\n"
        f"`configs/metadata.json` `medseg_qc.structures` was chosen by `scripts/bench/qc_calibrate.py` on "
        f"{n_cases} calibration phantoms{FAT_PHRASE if perirenal_fat else ''} "
        f"of the validation seeds {seeds[0]}..{seeds[-1]} (disjoint from the QC "
        "benchmark's evaluation seeds, 50000 on; phantoms only, no real scans):\n\n"
        f"```bash\n{command} --write\n```\n\n"
        "Per structure and threshold: the value with the best Youden's J (bad cases flagged minus good cases "
        "flagged) among those flagging at most 5 % of the good calibration cases (bad: mean organ Dice < 0.7, or "
        "a wrong input); a fitted value stricter than the case-wide one is not used (the case-wide value stays). "
        "A `max_high_entropy_fraction` of 1 never fires.\n\n"
        "| structure | threshold | value | fitted | bad calibration cases flagged | good cases flagged |\n"
        "|---|---|---|---|---|---|\n" + "\n".join(rows) + f"\n{MARK}\n"
    )
    if MARK in text:
        head, _, rest = text.partition(MARK)
        _, _, tail = rest.partition(MARK + "\n")
        text = head + section + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section
    from pipelines.io.writers import atomic_path

    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=REPO / "bundles" / "ct_abdomen_unet")
    parser.add_argument("--seeds", type=int, default=3, help="calibration seeds (validation range; default 3)")
    parser.add_argument("--max-false-rate", type=float, default=0.05, help="most good cases a flag may fire on")
    parser.add_argument("--json", type=Path, default=None, help="write the calibration cases and thresholds here")
    parser.add_argument("--from-json", type=Path, default=None, help="reuse the cases of an earlier --json")
    parser.add_argument(
        "--perirenal-fat",
        action="store_true",
        help="calibration phantoms with the kidneys and adrenal glands in their perirenal fat (the UNETR's recipe)",
    )
    parser.add_argument("--write", action="store_true", help="write metadata.json medseg_qc.structures and the docs")
    parser.add_argument(
        "--allow-tighter", action="store_true", help="let a structure's value be stricter than the case-wide one"
    )
    args = parser.parse_args()

    from pipelines.data.datasets import SEEDS

    seeds = list(SEEDS["validation"][: args.seeds])
    if set(seeds) & set(SEEDS["test"]):  # the ranges are disjoint by construction; never calibrate on test seeds
        raise SystemExit("calibration seeds overlap the benchmark's evaluation seeds")
    start = time.perf_counter()
    # the command that segmented the calibration cases (an earlier run's when reusing its --json)
    command = ".venv/bin/python scripts/bench/qc_calibrate.py " + shlex.join(a for a in sys.argv[1:] if a != "--write")
    if args.from_json:
        record = json.loads(args.from_json.read_text())
        rows, seeds, command = record["cases"], record["seeds"], record.get("command", command)
        perirenal_fat = bool(record.get("perirenal_fat", False))
    else:
        perirenal_fat = args.perirenal_fat
        rows = collect(args.bundle, seeds, perirenal_fat=perirenal_fat)
    from pipelines.outputs.quality import read_quality_spec

    spec = read_quality_spec(json.loads((args.bundle / "configs" / "metadata.json").read_text()))
    case_wide = None if args.allow_tighter else {key: getattr(spec, key) for key, _, _ in METRICS}
    table = calibrate(rows, args.max_false_rate, case_wide)
    structures = {name: {key: c["threshold"] for key, c in keys.items()} for name, keys in table.items()}
    print(f"\n{len(rows)} calibration cases ({sum(r['bad'] for r in rows)} bad), seeds {seeds}")
    for name, keys in table.items():
        for key, c in keys.items():
            print(
                f"{name:<14} {key:<26} {c['threshold']:<6g} (fitted {c['fitted']:<6g}) "
                f"bad flagged {c['bad_flagged']:.0%} of {c['n_bad']}, "
                f"good flagged {c['good_flagged']:.0%} of {c['n_good']}"
            )
    if args.json:
        record = {
            "command": command,
            "seeds": seeds,
            "perirenal_fat": perirenal_fat,
            "cases": rows,
            "thresholds": table,
        }
        args.json.write_text(json.dumps(record, indent=1, default=str))
    if args.write:
        print(f"wrote {write_metadata(args.bundle, structures)}")
        print(f"wrote {write_docs(args.bundle, table, command.strip(), seeds, len(rows), perirenal_fat=perirenal_fat)}")
    print(f"wall time {time.perf_counter() - start:.0f} s")
    return 0 if all(not math.isnan(c["threshold"]) for k in table.values() for c in k.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
