"""The lab's own push client (raw httpx) and a skopeo wrapper, to load registries with known content.

`RawPusher` covers what skopeo cannot make: schema 1, nested indexes, BuildKit cache indexes of blobs,
artifacts with `subject` and their fallback tag. It is deliberately independent of geo_tui.
"""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from tests.support.binaries import find_binary
from tests.support.keys import CATALOG_SCOPE, DEFAULT_ISSUER, DEFAULT_SERVICE, TestKeyPair, repository_scope
from tests.support.oci import ALL_MANIFEST_TYPES, SKOPEO_DIR, Blob, ManifestNode

SKOPEO_TIMEOUT = 180.0


class PushError(AssertionError):
    """A registry answered something the lab did not expect; carries the status and body."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        request = response.request
        super().__init__(f"{request.method} {request.url} -> {response.status_code}: {response.text[:500]}")


class RawPusher:
    """A minimal OCI distribution client. Auth: a key pair (mints its own tokens), a fixed token, or none."""

    def __init__(
        self,
        base_url: str,
        *,
        key_pair: TestKeyPair | None = None,
        token: str | None = None,
        issuer: str = DEFAULT_ISSUER,
        service: str = DEFAULT_SERVICE,
        actions: tuple[str, ...] = ("pull", "push", "delete"),
        timeout: float = 30.0,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.key_pair = key_pair
        self.token = token
        self.issuer = issuer
        self.service = service
        self.actions = actions
        self._client = httpx.Client(base_url=self.base_url, timeout=timeout, verify=verify)

    @classmethod
    def for_registry(cls, registry: Any, **kwargs: Any) -> RawPusher:
        """A pusher for a `Distribution` (its URL, key pair, issuer and service)."""
        return cls(
            registry.url,
            key_pair=registry.key_pair,
            issuer=registry.issuer,
            service=registry.service,
            verify=getattr(registry, "verify", True),
            **kwargs,
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> RawPusher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _auth(self, repository: str | None) -> dict[str, str]:
        if self.token is not None:
            return {"Authorization": f"Bearer {self.token}"}
        if self.key_pair is None:
            return {}
        scope = CATALOG_SCOPE if repository is None else repository_scope(repository, *self.actions)
        token = self.key_pair.mint([scope], issuer=self.issuer, service=self.service)
        return {"Authorization": f"Bearer {token}"}

    def request(
        self,
        method: str,
        path: str,
        *,
        repository: str | None = None,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """One request with a token for `repository` (None: the catalog scope). Never raises on status."""
        merged = {**self._auth(repository), **(headers or {})}
        return self._client.request(method, path, headers=merged, **kwargs)

    def _expect(self, response: httpx.Response, *statuses: int) -> httpx.Response:
        if response.status_code not in statuses:
            raise PushError(response)
        return response

    # Blobs.
    def blob_exists(self, repository: str, digest: str) -> bool:
        response = self.request("HEAD", f"/v2/{repository}/blobs/{digest}", repository=repository)
        return response.status_code == 200

    def push_blob(self, repository: str, blob: Blob | bytes, *, skip_existing: bool = True) -> str:
        """POST an upload session, then PUT the bytes with `digest=` added to the Location's own query."""
        if isinstance(blob, bytes):
            blob = Blob(blob, "application/octet-stream")
        if skip_existing and self.blob_exists(repository, blob.digest):
            return blob.digest
        started = self._expect(
            self.request("POST", f"/v2/{repository}/blobs/uploads/", repository=repository), 202
        )
        location = urlsplit(started.headers["Location"])
        query = f"{location.query}&digest={blob.digest}" if location.query else f"digest={blob.digest}"
        self._expect(
            self.request(
                "PUT",
                f"{location.path}?{query}",
                repository=repository,
                content=blob.data,
                headers={"Content-Type": "application/octet-stream"},
            ),
            201,
        )
        return blob.digest

    def get_blob(self, repository: str, digest: str) -> httpx.Response:
        return self.request(
            "GET", f"/v2/{repository}/blobs/{digest}", repository=repository, follow_redirects=True
        )

    def delete_blob(self, repository: str, digest: str) -> httpx.Response:
        return self.request("DELETE", f"/v2/{repository}/blobs/{digest}", repository=repository)

    # Manifests.
    def push_manifest(self, repository: str, reference: str, manifest: bytes, media_type: str) -> str:
        """PUT the exact bytes under `reference` (tag or digest); return Docker-Content-Digest."""
        response = self._expect(
            self.request(
                "PUT",
                f"/v2/{repository}/manifests/{reference}",
                repository=repository,
                content=manifest,
                headers={"Content-Type": media_type},
            ),
            201,
        )
        return str(response.headers.get("Docker-Content-Digest", ""))

    def push_node(self, repository: str, node: ManifestNode, reference: str | None = None) -> str:
        for blob in node.blobs:
            self.push_blob(repository, blob)
        return self.push_manifest(repository, reference or node.digest, node.manifest, node.media_type)

    def push_tree(self, repository: str, node: ManifestNode, tag: str | None = None) -> str:
        """Push blobs, then every child by digest (depth first), then `node` by `tag` (or by digest)."""
        for blob in node.all_blobs().values():
            self.push_blob(repository, blob)
        for child in node.walk():
            if child is not node:
                self.push_manifest(repository, child.digest, child.manifest, child.media_type)
        return self.push_manifest(repository, tag or node.digest, node.manifest, node.media_type)

    def head_manifest(
        self, repository: str, reference: str, accept: tuple[str, ...] = ALL_MANIFEST_TYPES
    ) -> httpx.Response:
        return self.request(
            "HEAD",
            f"/v2/{repository}/manifests/{reference}",
            repository=repository,
            headers={"Accept": ", ".join(accept)},
        )

    def get_manifest(
        self, repository: str, reference: str, accept: tuple[str, ...] = ALL_MANIFEST_TYPES
    ) -> httpx.Response:
        return self.request(
            "GET",
            f"/v2/{repository}/manifests/{reference}",
            repository=repository,
            headers={"Accept": ", ".join(accept)},
        )

    def delete_manifest(self, repository: str, reference: str) -> httpx.Response:
        return self.request("DELETE", f"/v2/{repository}/manifests/{reference}", repository=repository)

    # Listings (both follow `Link: <...>; rel="next"`).
    def list_tags(self, repository: str, page_size: int | None = None) -> list[str]:
        query = f"?n={page_size}" if page_size else ""
        pages = self._pages(f"/v2/{repository}/tags/list{query}", repository, "tags")
        return sorted(pages)

    def catalog(self, page_size: int | None = None) -> list[str]:
        query = f"?n={page_size}" if page_size else ""
        return self._pages(f"/v2/_catalog{query}", None, "repositories")

    def _pages(self, path: str, repository: str | None, key: str) -> list[str]:
        items: list[str] = []
        next_path: str | None = path
        while next_path:
            response = self._expect(self.request("GET", next_path, repository=repository), 200)
            items.extend(response.json().get(key) or [])
            next_link = response.links.get("next", {}).get("url")
            next_path = str(next_link).removeprefix(self.base_url) if next_link else None
        return items


def skopeo_push(
    layout_dir: Path | str,
    tag: str,
    registry_url: str,
    repo: str,
    *,
    dest_tag: str | None = None,
    creds: str | None = None,
    all_images: bool = True,
    timeout: float = SKOPEO_TIMEOUT,
) -> subprocess.CompletedProcess[str]:
    """`skopeo copy` an image of an OCI layout into a registry over plain HTTP, digests preserved.

    Docker-typed images come from the layout's `skopeo-dir/<tag>` (see `write_oci_layout`).
    """
    skopeo = find_binary("skopeo")
    dir_source = Path(layout_dir, SKOPEO_DIR, tag)
    source = f"dir:{dir_source}" if (dir_source / "manifest.json").exists() else f"oci:{layout_dir}:{tag}"
    host = urlsplit(registry_url).netloc or registry_url
    command = [
        skopeo,
        "--insecure-policy",
        "copy",
        "--dest-tls-verify=false",
        "--preserve-digests",
        "--retry-times=0",
    ]
    if all_images:
        command.append("--all")
    command += ["--dest-creds", creds] if creds else ["--dest-no-creds"]
    command += [source, f"docker://{host}/{repo}:{dest_tag or tag}"]
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired as error:
        raise AssertionError(f"skopeo timed out after {timeout:.0f} s: {' '.join(command)}") from error
    if result.returncode != 0:
        tail = "\n".join(result.stderr.splitlines()[-20:])
        raise AssertionError(f"skopeo exited {result.returncode}: {' '.join(command)}\n{tail}")
    return result


def skopeo_pull(
    registry_url: str, repo: str, reference: str, destination: Path | str, *, timeout: float = SKOPEO_TIMEOUT
) -> subprocess.CompletedProcess[str]:
    """`skopeo copy --all` an image by tag or digest (every platform of an index) from a registry into an OCI
    layout, as a client restoring from that registry would: it fails unless every manifest and blob is
    there and hashes to its digest. Returns the finished process; its returncode and stderr tell."""
    host = urlsplit(registry_url).netloc or registry_url
    source = f"docker://{host}/{repo}{'@' if ':' in reference else ':'}{reference}"
    command = [
        find_binary("skopeo"), "--insecure-policy", "copy", "--src-tls-verify=false", "--all",
        "--preserve-digests", "--retry-times=0", source, f"oci:{destination}:pulled",
    ]  # fmt: skip
    try:
        return subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired as error:
        raise AssertionError(f"skopeo timed out after {timeout:.0f} s: {' '.join(command)}") from error
