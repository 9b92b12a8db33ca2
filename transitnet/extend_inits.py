"""Per-line initialisations of an extension, with ``similar:auto`` resolved.

``similar:auto`` gives each new line the mean row of the known lines that drive part of
its path the same way, found in the static feed (:mod:`transitnet.gtfs.similar_lines`), so
it needs no recorded fix of the new line; every other init applies to all new lines as is.
"""

from __future__ import annotations

import logging
from typing import Any

from transitnet.datamodules.transit import TransitDataModule
from transitnet.datasets.vocab import UNKNOWN_KEY

logger = logging.getLogger(__name__)

AUTO = "similar:auto"


def resolve_inits(
    init: str, dm: TransitDataModule, new_keys: list[str]
) -> tuple[dict[str, str], dict[str, Any]]:
    """Each new line's init, and (for ``similar:auto``) what was found.

    Args:
        init: The configured init (``similar:auto`` or any init of ``add_lines``).
        dm: The DataModule: its vocabulary (the known lines, candidates of
            ``similar:auto``), ``static`` feed and ``store`` (artefact cache).
        new_keys: The lines being added.

    Returns:
        ``({line_key: init}, {line_key: {"similar": [key, …], "overlap": best share,
        "ranked": [[key, share], … top 5]}})``; the second is empty unless ``similar:auto``.

    Raises:
        ValueError: ``similar:auto`` without a static feed, for a line without a shape,
            or when no known line shares its path.
    """
    if init != AUTO:
        return {key: init for key in new_keys}, {}
    if not dm.static:
        raise ValueError("similar:auto reads the lines' shapes: give the static feed (static)")
    from transitnet.gtfs.artefacts import load_or_build_artefacts
    from transitnet.gtfs.similar_lines import choose_similar_lines, rank_similar_lines

    art = load_or_build_artefacts(dm.static, dm.store, line_key_mode=dm.hparams["line_key_mode"])
    known = [k for k in dm.vocab.keys if k != UNKNOWN_KEY and k not in new_keys]
    inits: dict[str, str] = {}
    found: dict[str, Any] = {}
    for key in new_keys:
        ranked = rank_similar_lines(art, key, known)
        chosen = choose_similar_lines(ranked, key)
        inits[key] = "similar:" + ",".join(chosen)
        top = ranked.head(5)
        found[key] = {
            "similar": chosen,
            "overlap": round(float(ranked["overlap"].iloc[0]), 4),
            "ranked": [
                [k, round(float(v), 4)]
                for k, v in zip(top["line_key"], top["overlap"], strict=True)
            ],
        }
        logger.info("similar:auto: line %s starts from the mean row of %d line(s) on its path "
                    "(best: %s, %.0f %% of it, same way)", key, len(chosen), chosen[0],
                    100 * found[key]["overlap"])  # fmt: skip
    return inits, found
