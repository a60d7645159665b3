"""Data for sweeps on several nodes: staged once, fetched by every trial into a node-local cache, by content.

The driver lists the sweep's data files with their sha256 (:func:`stage`). With cloud storage (``s3://``,
``gs://``) it uploads each local file once into ``<experiment>/data/<sha256>/<name>`` (an object already there
under its hash is not uploaded again); a file given as a URI stays where it is. Each trial then takes its files
from the node-local cache ``<cache>/<sha256>/<name>`` (:func:`fetch`; downloaded there once per node, checked
against the hash, renamed into place only when complete), so no trial regenerates or re-reads the data from the
head. The trial records the hashes in its run directory (``fleet_data.json``, part of every reported snapshot): a
trial restored onto other data is refused (:func:`check_resume`), which the trainer's own fingerprint (names,
sizes, counts) would not notice.

With local (or NFS) storage the files are used where they are, and their hashes are recorded all the same.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from ups_jax.errors import ConfigError, UserError

CACHE_ENV = "UPS_JAX_FLEET_DATA_CACHE"
RECORD = "fleet_data.json"
DATA_SUFFIXES = (".hdf5", ".h5")


def cache_root() -> Path:
    """Node-local cache shared by the trials on a node (``$UPS_JAX_FLEET_DATA_CACHE``, else the temp dir)."""
    return Path(os.environ.get(CACHE_ENV) or Path(tempfile.gettempdir()) / "ups_jax_fleet_data")


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def local_files(paths) -> list[Path]:
    """Data files of local paths (a directory: its .hdf5/.h5 files, sorted)."""
    out = []
    for p in map(Path, paths):
        out += sorted(f for f in p.rglob("*") if f.suffix in DATA_SUFFIXES) if p.is_dir() else [p]
    return out


def stage(paths, experiment_path: str, *, upload: bool) -> list[dict]:
    """Driver: one entry per data file, ``{'name', 'sha256', 'uri'}``; ``uri`` is where trials fetch it from
    (None: used at its local ``path``). ``paths`` may mix local paths and ``s3://``/``gs://`` URIs."""
    from ups_jax.fleet import storage as st

    entries = []
    for p in paths:
        if st.is_uri(p):
            local = download(p, None)
            entries.append({"name": local.name, "sha256": local.parent.name, "uri": p, "path": str(local)})
            continue
        for f in local_files([p]):
            digest = sha256(f)
            entry = {"name": f.name, "sha256": digest, "uri": None, "path": str(f)}
            if upload:
                entry["uri"] = st.join(experiment_path, "data", digest, f.name)
                if not st.exists(entry["uri"]):
                    _upload(f, entry["uri"])
            entries.append(entry)
    return entries


def fetch(entries: list[dict]) -> list[str]:
    """Trial: the local paths of the staged files, downloading the missing ones into the node-local cache."""
    out = []
    for e in entries:
        if e["uri"] is None:
            local = Path(e["path"])
            if sha256(local) != e["sha256"]:
                raise ConfigError(f"{local}: its content changed after the sweep started (sha256 differs from the "
                                  f"one recorded at the start); restore it or start a new sweep")
        else:
            local = download(e["uri"], e["sha256"])
        out.append(str(local))
    return out


def download(uri: str, digest: str | None) -> Path:
    """``<cache>/<sha256>/<name>`` for ``uri``; downloaded once, hash-checked, renamed into place when complete."""
    from ups_jax.fleet import storage as st

    name = uri.partition("?")[0].rstrip("/").rsplit("/", 1)[-1]
    root = cache_root()
    if digest is not None and (root / digest / name).is_file():
        return root / digest / name
    if not st.exists(uri):
        raise UserError(f"data {uri}: not found; check the URI (a dataset given by URI must exist before the sweep "
                        f"starts) and the node's access to the bucket")
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".fetch-", dir=root))
    try:
        fs, path = st.filesystem(uri)
        try:
            with fs.open_input_stream(path) as src, open(tmp / name, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        except OSError as e:
            raise st.unreachable(uri, e) from None
        got = sha256(tmp / name)
        if digest is not None and got != digest:
            raise ConfigError(f"data {uri}: content differs from the sweep's (sha256 {got[:12]}… instead of "
                              f"{digest[:12]}…); it was changed after the sweep started: restore it or start a new "
                              f"sweep")
        final = root / got / name
        final.parent.mkdir(parents=True, exist_ok=True)
        if not final.exists():
            os.replace(tmp / name, final)        # atomic: another trial on this node may have won the race
        return final
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _upload(local: Path, uri: str) -> None:
    import pyarrow.fs as pafs

    from ups_jax.fleet import storage as st

    fs, path = st.filesystem(uri)
    try:
        fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        pafs.copy_files(str(local), path, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)
    except OSError as e:
        raise st.unreachable(uri, e) from None


def record(entries: list[dict]) -> dict:
    return {"files": [{"name": e["name"], "sha256": e["sha256"]} for e in entries]}


def check_resume(workdir: Path, entries: list[dict]) -> None:
    """A restored trial must continue on the data it was trained on; then (re)writes the run's record."""
    now = record(entries)
    path = Path(workdir) / RECORD
    if path.is_file():
        before = json.loads(path.read_text())
        if before != now:
            was = ", ".join(f"{f['name']} {f['sha256'][:12]}…" for f in before["files"])
            got = ", ".join(f"{f['name']} {f['sha256'][:12]}…" for f in now["files"])
            raise ConfigError(f"{path}: this trial was trained on other data ({was}) than the sweep now gives it "
                              f"({got}); resume with the original data or start a new sweep")
    Path(workdir).mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(now, indent=1))
