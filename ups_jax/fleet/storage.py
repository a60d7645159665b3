"""Sweep storage: a local (or shared, e.g. NFS) directory, or an ``s3://`` / ``gs://`` URI.

Ray resolves URIs with ``pyarrow.fs`` and so do we, so a location that works for ``ray.tune`` works here. Query
parameters are pyarrow's: ``s3://bucket/sweeps?endpoint_override=host:9000&scheme=http`` reaches an
S3-compatible server (MinIO, moto), as does the ``AWS_ENDPOINT_URL`` variable. Credentials come from the usual
provider chains (environment, ``~/.aws``, instance roles, ``gcloud auth application-default login``), never from
a file in this project.
"""

from __future__ import annotations

import posixpath
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
    fs, path = filesystem(location)
    try:
        fs.create_dir(posixpath.dirname(path) if is_uri(location) else str(Path(path).parent), recursive=True)
        with fs.open_output_stream(path) as f:
            f.write(text.encode())
    except OSError as e:
        raise unreachable(location, e) from None


def unreachable(location: str, e: BaseException) -> UserError:
    return UserError(f"{location}: storage not reachable ({first_line(e)}); check the URI, the network and the "
                     f"credentials (AWS_* / GOOGLE_APPLICATION_CREDENTIALS), or use a local path")


def first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:300]
