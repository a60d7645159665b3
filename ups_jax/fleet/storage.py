"""Sweep storage: a local (or shared, e.g. NFS) directory, or an ``s3://`` / ``gs://`` URI.

Ray resolves URIs with ``pyarrow.fs`` and so do we, so a location that works for ``ray.tune`` works here. Query
parameters are pyarrow's: ``s3://bucket/sweeps?endpoint_override=host:9000&scheme=http`` reaches an
S3-compatible server (MinIO, moto), as does the ``AWS_ENDPOINT_URL`` variable. Credentials come from the usual
provider chains (environment, ``~/.aws``, instance roles, ``gcloud auth application-default login``), never from
a file in this project.
"""

from __future__ import annotations

import json
import os
import posixpath
import tempfile
from pathlib import Path

from ups_jax.errors import UserError


def is_uri(location: str) -> bool:
    return "://" in str(location)


def join(base: str, *parts: str) -> str:
    """``join('s3://b/sweeps?scheme=http', 'smoke') == 's3://b/sweeps/smoke?scheme=http'``; paths as os.path."""
    base = str(base)
    if not is_uri(base):
        return str(Path(base, *parts))
    root, sep, query = base.partition("?")
    return posixpath.join(root.rstrip("/"), *parts) + (sep + query if sep else "")


def filesystem(location: str):
    """(pyarrow filesystem, path on it) for a local path or a URI."""
    import pyarrow.fs as pafs

    if not is_uri(location):
        return pafs.LocalFileSystem(), str(Path(location).expanduser().absolute())
    try:
        return pafs.FileSystem.from_uri(location)
    except (ValueError, OSError) as e:
        raise UserError(f"{location}: cannot open this storage location ({first_line(e)}); use a local path, "
                        f"s3://bucket/prefix or gs://bucket/prefix") from None


def exists(location: str) -> bool:
    import pyarrow.fs as pafs

    fs, path = filesystem(location)
    try:
        return fs.get_file_info(path).type != pafs.FileType.NotFound
    except OSError as e:
        raise unreachable(location, e) from None


def read_text(location: str) -> str | None:
    """The file's text, or None if it does not exist."""
    fs, path = filesystem(location)
    try:
        with fs.open_input_stream(path) as f:
            return f.read().decode()
    except FileNotFoundError:
        return None
    except OSError as e:
        if "not found" in str(e).lower() or "no such file" in str(e).lower():
            return None
        raise unreachable(location, e) from None


def write_text(location: str, text: str) -> None:
    """Writes the whole file or nothing: a local file through a temporary sibling and ``os.replace``; an object in
    a bucket is atomic by itself (S3 and GCS show an upload only once it is complete)."""
    fs, path = filesystem(location)
    try:
        if is_uri(location):
            fs.create_dir(posixpath.dirname(path), recursive=True)
            with fs.open_output_stream(path) as f:
                f.write(text.encode())
            return
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(text.encode())
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except OSError as e:
        raise unreachable(location, e) from None


def delete(location: str) -> None:
    """Removes a file (a missing one is fine)."""
    fs, path = filesystem(location)
    try:
        fs.delete_file(path)
    except FileNotFoundError:
        pass
    except OSError as e:
        if "not found" not in str(e).lower() and "no such file" not in str(e).lower():
            raise unreachable(location, e) from None


def read_json(location: str, *, what: str):
    """The parsed JSON file, None if it does not exist; a damaged file is a one-line error."""
    text = read_text(location)
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{location}: {what} is damaged ({e.msg} at character {e.pos}); it is rewritten at the end "
                        f"of the sweep (python -m ups_jax.fleet.sweep ... --resume)") from None


class StorageError(UserError):
    """Storage not reachable or not writable; ``cause`` is the underlying error's first line."""

    def __init__(self, message: str, cause: str = ""):
        super().__init__(message)
        self.cause = cause


def unreachable(location: str, e: BaseException) -> StorageError:
    return StorageError(f"{location}: storage not reachable ({first_line(e)}); check the URI, the network and "
                        f"the credentials (AWS_* / GOOGLE_APPLICATION_CREDENTIALS, the node's instance profile or "
                        f"service account), or use a local path", first_line(e))


def first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:300]
