"""Which bundles a MONAI Label server offers: every bundle of a folder that has trained weights.

This module does not import MONAI Label, so the command line can list and check the bundles
before it starts the server.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from pipelines.bundles.bundle import Bundle, load_bundle
from pipelines.bundles.find import bundles_in

logger = logging.getLogger(__name__)

__all__ = ["ServedBundle", "served_bundles"]


@dataclass(frozen=True)
class ServedBundle:
    """A bundle as MONAI Label shows it.

    Attributes:
        model: the model name in MONAI Label's API (the bundle's folder name: ``/infer/<model>``).
        bundle: the opened bundle.
        labels: structure name -> label id, background left out (MONAI Label's ``labels`` shape).
        description: ``metadata.json`` ``description`` (its ``task`` when there is none).
    """

    model: str
    bundle: Bundle

    @property
    def labels(self) -> dict[str, int]:
        return {name: int(i) for i, name in sorted(self.bundle.labels.items()) if int(i) != 0}

    @property
    def description(self) -> str:
        meta = self.bundle.metadata
        return str(meta.get("description") or meta.get("task") or self.bundle.name)


def served_bundles(folder: str | Path) -> list[ServedBundle]:
    """The bundles of ``folder`` that can be served, by folder name.

    A bundle without ``models/model.pt`` is left out with a warning (it would answer every request
    with an error); a folder with no servable bundle at all is refused.

    Raises:
        FileNotFoundError: ``folder`` does not exist, or holds no bundle with weights.
        ValueError: two bundles would get the same model name, or a bundle names no labels.
    """
    folder = Path(folder)
    served: list[ServedBundle] = []
    skipped: list[str] = []
    for root in bundles_in(folder):
        bundle = load_bundle(root)
        if not bundle.weights.is_file():
            logger.warning("%s: no models/model.pt; bundle %s is not served", root, bundle.name)
            skipped.append(root.name)
            continue
        if not bundle.labels:
            raise ValueError(
                f"{root / 'configs' / 'metadata.json'}: names no labels "
                "(network_data_format.outputs.pred.channel_def); MONAI Label needs them"
            )
        served.append(ServedBundle(model=root.name, bundle=bundle))
    if not served:
        extra = f" (without weights: {', '.join(skipped)})" if skipped else ""
        raise FileNotFoundError(
            f"{folder}: no bundle with trained weights (configs/inference.json and models/model.pt){extra}"
        )
    return served
