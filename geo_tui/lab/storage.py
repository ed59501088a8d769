"""The lab registry's content on the filesystem, laid out like Distribution's.

    blobs/<alg>/<hex>                              every blob and manifest, once, by digest
    repositories/<name>/_layers/<alg>/<hex>        a blob linked into a repository (empty file)
    repositories/<name>/_manifests/revisions/<alg>/<hex>   a manifest of the repository (holds its media type)
    repositories/<name>/_manifests/tags/<tag>      the digest a tag points at
    repositories/<name>/_referrers/<alg>/<hex>/<alg>-<hex>   a manifest whose subject is <alg>:<hex> (empty)
    uploads/<uuid>/data, uploads/<uuid>/repository an upload session in progress
    http.secret                                    the key that signs upload states (as Distribution's)

Three stores share one `LabLayout` (the paths above): `BlobStore` (content by digest, linked into
repositories), `ManifestStore` (manifests, tags, referrers and the catalog) and `UploadStore` (upload
sessions); `LabStorage` holds the three and the upload-state key.

Content lands under a temporary name and is renamed into place, so a crash never leaves a half-written
blob under its digest. As in Distribution, a repository is in the catalog once a blob was linked into it,
and has a tag list once a tag was pushed.
"""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "BlobStore",
    "LabLayout",
    "LabStorage",
    "ManifestStore",
    "UploadStore",
    "UploadUnknown",
    "catalog_key",
    "upload_key",
]

CHUNK = 1024 * 1024


class UploadUnknown(KeyError):
    """No upload session with that id in that repository."""


def catalog_key(name: str) -> str:
    """Distribution walks the tree depth first, so `a/b` comes before `a-c`: '/' sorts lowest."""
    return name.replace("/", "\x00")


def upload_key(upload_id: str) -> str:
    """The one spelling of an upload id that progress and storage are keyed by (a lower-case UUID with
    dashes): ``ABC...`` and ``abc...`` must never be two sessions over one file. Raises UploadUnknown."""
    try:
        return str(uuid.UUID(upload_id))
    except ValueError:
        raise UploadUnknown(upload_id) from None


def _split(digest: str) -> tuple[str, str]:
    algorithm, _, hex_digest = digest.partition(":")
    return algorithm, hex_digest


class LabLayout:
    """Where each thing lives under the root: the one place that turns names and digests into paths."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def blob(self, digest: str) -> Path:
        algorithm, hex_digest = _split(digest)
        return self.root / "blobs" / algorithm / hex_digest

    def repository(self, name: str) -> Path:
        return self.root / "repositories" / name

    def layer_link(self, name: str, digest: str) -> Path:
        return self.repository(name).joinpath("_layers", *_split(digest))

    def revision(self, name: str, digest: str) -> Path:
        return self.repository(name).joinpath("_manifests", "revisions", *_split(digest))

    def tags(self, name: str) -> Path:
        return self.repository(name) / "_manifests" / "tags"

    def referrers(self, name: str, subject: str) -> Path:
        return self.repository(name).joinpath("_referrers", *_split(subject))

    def upload(self, upload_id: str) -> Path:
        return self.root / "uploads" / upload_key(upload_id)  # never a path of the caller's making


class BlobStore:
    """Content by digest (blobs and manifests' bytes), and the links that put a blob in a repository."""

    def __init__(self, layout: LabLayout) -> None:
        self._layout = layout

    def size(self, name: str, digest: str) -> int | None:
        """The size of `digest` if the repository `name` holds it as a blob, else None."""
        if not self._layout.layer_link(name, digest).exists():
            return None
        try:
            return self._layout.blob(digest).stat().st_size
        except FileNotFoundError:
            return None

    def read(self, digest: str) -> Iterator[bytes]:
        with open(self._layout.blob(digest), "rb") as handle:
            while chunk := handle.read(CHUNK):
                yield chunk

    def link(self, name: str, digest: str) -> None:
        link = self._layout.layer_link(name, digest)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.touch()

    def unlink(self, name: str, digest: str) -> bool:
        try:
            self._layout.layer_link(name, digest).unlink()
        except FileNotFoundError:
            return False
        return True

    def store(self, digest: str, content: bytes) -> None:
        """Keep `content` under `digest` (a manifest's bytes); no-op when it is already there."""
        target = self._layout.blob(digest)
        if target.exists():
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex}")
        temporary.write_bytes(content)
        os.replace(temporary, target)

    def content(self, digest: str) -> bytes:
        return self._layout.blob(digest).read_bytes()


class ManifestStore:
    """Manifests of each repository (by digest, with their media type), tags, referrers and the catalog."""

    def __init__(self, layout: LabLayout, blobs: BlobStore) -> None:
        self._layout = layout
        self._blobs = blobs

    def has_content(self, name: str, digest: str) -> bool:
        """Whether `name` holds `digest` as a blob or a manifest (what Distribution checks for references)."""
        return self._blobs.size(name, digest) is not None or self._layout.revision(name, digest).exists()

    def media_type(self, name: str, digest: str) -> str | None:
        try:
            return self._layout.revision(name, digest).read_text()
        except FileNotFoundError:
            return None

    def put(self, name: str, digest: str, content: bytes, media_type: str) -> None:
        self._blobs.store(digest, content)
        revision = self._layout.revision(name, digest)
        revision.parent.mkdir(parents=True, exist_ok=True)
        revision.write_text(media_type)

    def delete(self, name: str, digest: str) -> list[str] | None:
        """Remove the manifest from the repository and every tag pointing at it, as Distribution 2.8 does.

        Returns the tags removed, or None when the repository does not hold the manifest.
        """
        try:
            self._layout.revision(name, digest).unlink()
        except FileNotFoundError:
            return None
        removed = [tag for tag in self.tags(name) or [] if self.resolve_tag(name, tag) == digest]
        for tag in removed:
            (self._layout.tags(name) / tag).unlink(missing_ok=True)
        return removed

    def tag(self, name: str, tag: str, digest: str) -> None:
        path = self._layout.tags(name) / tag
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{tag}.{uuid.uuid4().hex}")
        temporary.write_text(digest)
        os.replace(temporary, path)

    def resolve_tag(self, name: str, tag: str) -> str | None:
        try:
            return (self._layout.tags(name) / tag).read_text()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def tags(self, name: str) -> list[str] | None:
        """Sorted tags of `name`; None when the repository holds no manifest (unknown)."""
        try:
            entries = os.listdir(self._layout.tags(name))
        except (FileNotFoundError, NotADirectoryError):
            return None
        return sorted(entry for entry in entries if not entry.startswith("."))

    def repositories(self) -> list[str]:
        """Every repository a blob was ever linked into, in Distribution's catalog order."""
        base = self._layout.root / "repositories"
        found = []
        for directory, subdirectories, _ in os.walk(base):
            if "_layers" in subdirectories:
                found.append(os.path.relpath(directory, base).replace(os.sep, "/"))
            # Underscore directories hold content, not nested repositories.
            subdirectories[:] = [d for d in subdirectories if not d.startswith("_")]
        return sorted(found, key=catalog_key)

    # Referrers (OCI 1.1): manifests by the subject they name.
    def link_referrer(self, name: str, subject: str, digest: str) -> None:
        directory = self._layout.referrers(name, subject)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / digest.replace(":", "-", 1)).touch()

    def unlink_referrer(self, name: str, subject: str, digest: str) -> None:
        (self._layout.referrers(name, subject) / digest.replace(":", "-", 1)).unlink(missing_ok=True)

    def referrers(self, name: str, subject: str) -> list[str]:
        """Digests of the manifests of `name` whose subject is `subject`, sorted."""
        try:
            entries = os.listdir(self._layout.referrers(name, subject))
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(entry.replace("-", ":", 1) for entry in entries if not entry.startswith("."))


class UploadStore:
    """Upload sessions: a data file per session, tied to the repository it was started in."""

    def __init__(self, layout: LabLayout, blobs: BlobStore) -> None:
        self._layout = layout
        self._blobs = blobs

    def start(self, name: str) -> str:
        upload_id = str(uuid.uuid4())
        directory = self._layout.upload(upload_id)
        directory.mkdir()
        (directory / "repository").write_text(name)
        (directory / "data").touch()
        return upload_id

    def data(self, name: str, upload_id: str) -> Path:
        """The data file of the session `upload_id` of repository `name`; raises UploadUnknown."""
        try:
            directory = self._layout.upload(upload_id)
            if (directory / "repository").read_text() != name:
                raise UploadUnknown(upload_id)
        except OSError:
            raise UploadUnknown(upload_id) from None
        return directory / "data"

    def size(self, name: str, upload_id: str) -> int:
        return self.data(name, upload_id).stat().st_size

    def commit(self, name: str, upload_id: str, digest: str) -> None:
        """Move the session's data under `digest` (kept if already there) and link it into `name`."""
        data = self.data(name, upload_id)
        target = self._layout.blob(digest)
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            os.replace(data, target)
        self.cancel(upload_id)
        self._blobs.link(name, digest)

    def cancel(self, upload_id: str) -> None:
        directory = self._layout.upload(upload_id)
        for part in ("data", "repository"):
            (directory / part).unlink(missing_ok=True)
        try:
            directory.rmdir()
        except FileNotFoundError:
            pass


class LabStorage:
    """Blobs, manifests, tags and upload sessions under one root directory (synchronous file I/O)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        for part in ("blobs", "repositories", "uploads"):
            (self.root / part).mkdir(parents=True, exist_ok=True)
        layout = LabLayout(self.root)
        self.blobs = BlobStore(layout)
        self.manifests = ManifestStore(layout, self.blobs)
        self.uploads = UploadStore(layout, self.blobs)

    def http_secret(self) -> bytes:
        """The key upload states are signed with: made once (0600) and kept, so sessions survive a restart
        as they do with Distribution's fixed ``http.secret``."""
        path = self.root / "http.secret"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return path.read_bytes()
        with os.fdopen(fd, "wb") as handle:
            key = secrets.token_bytes(32)
            handle.write(key)
        return key
