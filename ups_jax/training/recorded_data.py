"""Whether a finished run's recorded data files are on this machine (``evaluate`` and ``infer`` without --data).

Light on purpose (no jax): the entry points call it before they load the run, so the one-line error comes fast.
"""

from __future__ import annotations

import json
from pathlib import Path

from ups_jax.errors import DataError


def check_recorded_data(workdir: Path) -> None:
    """Without --data the run's own data paths are used; they are paths on the machine that trained it (a run
    pulled from a sweep, a copied directory). If they are not here, say so in one line and ask for --data."""
    try:
        paths = json.loads((workdir / "run_meta.json").read_text()).get("data_paths") or []
    except (OSError, ValueError):
        return                                    # not a run directory: load_run gives that error
    missing = [p for p in paths if not Path(p).exists()]
    if not missing:
        return
    origin = ""
    pulled = workdir / "pulled.json"
    if pulled.is_file():
        record = json.loads(pulled.read_text())
        origin = f" (trained on host {record.get('trained_on_host')}, pulled from {record.get('experiment')})"
    raise DataError(f"{workdir}: the run's data {missing[0]} is not on this machine{origin}; pass --data PATH... "
                    f"(the same files, or any with the training grid)")
