"""The demo's workload: a busy primary registry, reproducible from a seed.

`seed_primary()` pushes what exists before replication starts (the backfill); `step()` is one thing a
team does next: a release, a moved `latest`, a signature or SBOM attached to an image (referrers, through
the fallback tag, as on registries without the referrers API), a deleted build, a new repository. Every
format the engine copies appears: OCI and Docker schema 2 images, multi-arch indexes and manifest lists,
a nested index, OCI artifacts, BuildKit cache. Base layers are shared between repositories, as in life.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from geo_tui.figures import size
from geo_tui.registry import RegistryClient

from .images import (
    DOCKER_LAYER_GZIP,
    OCI_LAYER_GZIP,
    Blob,
    ManifestNode,
    buildkit_cache_index,
    docker_manifest_list,
    image_from_layers,
    layer_blob,
    oci_artifact,
    oci_index,
    referrers_tag,
)

__all__ = ["Action", "Workload"]

MiB = 1024 * 1024
UPLOAD_CHUNK = 1 * MiB
PLATFORMS = (("linux", "amd64", None), ("linux", "arm64", "v8"), ("linux", "arm", "v7"))
SBOM = "application/spdx+json"
SIGNATURE = "application/vnd.dev.cosign.artifact.sig.v1+json"


@dataclass(frozen=True)
class Action:
    """One change the workload made to the primary."""

    kind: str  # "push" | "artifact" | "delete"
    repository: str
    reference: str
    nbytes: int = 0

    def __str__(self) -> str:
        shown = f" ({size(self.nbytes)})" if self.nbytes >= MiB else ""
        return f"{self.kind} {self.repository}:{self.reference}{shown}"


@dataclass(frozen=True)
class _Repository:
    name: str
    kind: str  # how its images are built: see Workload._build
    base: str  # the shared base layers it sits on
    top_mib: float  # the size of its own layer


# name, kind, base, own layer MiB: the initial estate, ~70 MiB at scale 1.
REPOSITORIES = (
    _Repository("platform/api", "oci-multiarch", "debian", 2.0),
    _Repository("platform/web", "docker", "alpine", 1.5),
    _Repository("platform/auth", "oci-signed", "alpine", 1.0),
    _Repository("data/etl", "oci", "python", 3.0),
    _Repository("data/warehouse", "docker-list", "debian", 2.0),
    _Repository("ml/trainer", "oci", "python", 8.0),
    _Repository("ml/inference", "oci-nested", "python", 4.0),
    _Repository("tools/ci-runner", "buildkit-cache", "alpine", 1.0),
    _Repository("tools/cli", "docker", "alpine", 0.5),
    _Repository("mirror/alpine", "oci-multiarch", "alpine", 0.25),
    _Repository("mirror/debian", "docker-list", "debian", 0.5),
    _Repository("sandbox/builds", "oci", "alpine", 0.25),
)
BASES_MIB = {"alpine": (1.0, 0.5), "debian": (4.0, 2.0), "python": (6.0, 3.0)}


@dataclass
class _Pushed:
    """What the workload believes the primary holds: tag -> digest, and blobs per repository."""

    tags: dict[str, dict[str, str]] = field(default_factory=dict)
    blobs: dict[str, set[str]] = field(default_factory=dict)
    artifacts: dict[tuple[str, str], list[ManifestNode]] = field(default_factory=dict)


class Workload:
    """Pushes reproducible content into `client`'s registry (which must accept pull, push and delete)."""

    def __init__(self, client: RegistryClient, *, seed: int = 1, scale: float = 1.0) -> None:
        self.client = client
        self.seed = seed
        self.scale = scale
        self._rng = random.Random(seed)
        self._pushed = _Pushed()
        self._version: dict[str, int] = {}
        self._bases: dict[tuple[str, str, bool], list[Blob]] = {}
        self._extra_repositories = 0

    # -- the plan --------------------------------------------------------------------------------

    async def seed_primary(self, on_action: Callable[[Action], None] | None = None) -> list[Action]:
        """The estate before replication starts: two or three releases of every repository."""
        actions = []
        for repo in REPOSITORIES:
            for _ in range(2 + self._rng.randrange(2)):
                actions.append(await self._release(repo))
                if on_action is not None:
                    on_action(actions[-1])
        return actions

    async def step(self) -> Action:
        """One next change, chosen by the seeded random generator."""
        roll = self._rng.random()
        if roll < 0.12:
            deletable = self._deletable()
            if deletable:
                repository, tag = deletable[self._rng.randrange(len(deletable))]
                return await self._delete(repository, tag)
        if roll < 0.30:
            signable = [r for r in REPOSITORIES if r.kind in ("oci", "oci-signed", "oci-multiarch")]
            return await self._attach(signable[self._rng.randrange(len(signable))])
        if roll < 0.36:
            self._extra_repositories += 1
            repo = _Repository(f"sandbox/feature-{self._extra_repositories}", "oci", "alpine", 0.25)
            return await self._release(repo)
        return await self._release(REPOSITORIES[self._rng.randrange(len(REPOSITORIES))])

    def _deletable(self) -> list[tuple[str, str]]:
        """Tags whose manifest no other tag shares (Distribution deletes manifests, not tags)."""
        found = []
        for repository, tags in self._pushed.tags.items():
            digests = list(tags.values())
            for tag, digest in tags.items():
                if tag != "latest" and not tag.startswith("sha256-") and digests.count(digest) == 1:
                    found.append((repository, tag))
        return sorted(found)

    # -- actions ---------------------------------------------------------------------------------

    async def _release(self, repo: _Repository) -> Action:
        version = self._version.get(repo.name, 0) + 1
        self._version[repo.name] = version
        tag = f"v1.{version}.0" if repo.kind != "buildkit-cache" else f"cache-{version}"
        node = self._build(repo, version)
        nbytes = await self.push(repo.name, node, tag)
        if repo.kind != "buildkit-cache":
            await self.client.put_manifest(repo.name, "latest", node.manifest, node.media_type)
            self._pushed.tags[repo.name]["latest"] = node.digest
        return Action("push", repo.name, tag, nbytes)

    async def _attach(self, repo: _Repository) -> Action:
        """A signature or an SBOM for the repository's latest image, listed under its referrers tag."""
        tags = self._pushed.tags.get(repo.name)
        if not tags or "latest" not in tags:
            return await self._release(repo)
        subject = tags["latest"]
        info = await self.client.head_manifest(repo.name, subject)
        if info is None:
            return await self._release(repo)
        descriptor = {"mediaType": info.media_type, "digest": subject, "size": info.size}
        kind = SBOM if self._rng.random() < 0.5 else SIGNATURE
        known = self._pushed.artifacts.setdefault((repo.name, subject), [])
        artifact = oci_artifact(descriptor, artifact_type=kind, seed=f"{self.seed}/{subject}/{len(known)}")
        known.append(artifact)
        nbytes = await self.push(repo.name, artifact, None)
        fallback = oci_index(list(known))
        await self.push(repo.name, fallback, referrers_tag(subject))
        return Action("artifact", repo.name, f"{referrers_tag(subject)[:19]}…", nbytes)

    async def _delete(self, repository: str, tag: str) -> Action:
        digest = self._pushed.tags[repository].pop(tag)
        await self.client.delete_manifest(repository, digest)
        return Action("delete", repository, tag)

    # -- content ---------------------------------------------------------------------------------

    def _base(self, name: str, architecture: str, docker: bool) -> list[Blob]:
        key = (name, architecture, docker)
        if key not in self._bases:
            media_type = DOCKER_LAYER_GZIP if docker else OCI_LAYER_GZIP
            self._bases[key] = [
                self._layer(f"base/{name}/{architecture}/{i}", mib, media_type)
                for i, mib in enumerate(BASES_MIB[name])
            ]
        return self._bases[key]

    def _layer(self, seed: str, mib: float, media_type: str) -> Blob:
        nbytes = max(4096, int(mib * self.scale * MiB))
        return layer_blob(f"{self.seed}/{seed}", nbytes, media_type, compresslevel=0)

    def _image(
        self, repo: _Repository, version: int, arch: str, variant: str | None, docker: bool
    ) -> ManifestNode:
        media_type = DOCKER_LAYER_GZIP if docker else OCI_LAYER_GZIP
        top_mib = repo.top_mib * (0.5 + self._rng.random())
        top = self._layer(f"{repo.name}/{version}/{arch}", top_mib, media_type)
        return image_from_layers(
            [*self._base(repo.base, arch, docker), top],
            seed=f"{self.seed}/{repo.name}/{version}",
            docker=docker,
            architecture=arch,
            variant=variant,
            labels={"org.opencontainers.image.version": f"1.{version}.0"},
        )

    def _build(self, repo: _Repository, version: int) -> ManifestNode:
        if repo.kind in ("oci", "oci-signed"):
            return self._image(repo, version, "amd64", None, docker=False)
        if repo.kind == "docker":
            return self._image(repo, version, "amd64", None, docker=True)
        if repo.kind in ("oci-multiarch", "docker-list", "oci-nested"):
            docker = repo.kind == "docker-list"
            count = 3 if repo.name.startswith("mirror/") else 2
            images = [self._image(repo, version, a, v, docker) for _, a, v in PLATFORMS[:count]]
            if docker:
                return docker_manifest_list(images)
            if repo.kind == "oci-nested":  # an index of indexes: a GPU and a CPU flavour
                return oci_index([oci_index(images[:1]), oci_index(images[1:])])
            return oci_index(images)
        if repo.kind == "buildkit-cache":
            return buildkit_cache_index(f"{self.seed}/{repo.name}/{version}", layer_size=256 * 1024)
        raise ValueError(f"unknown repository kind {repo.kind!r}")

    # -- pushing ---------------------------------------------------------------------------------

    async def push(self, repository: str, node: ManifestNode, tag: str | None) -> int:
        """Push `node` (blobs, children by digest, then itself by `tag` or digest); the bytes uploaded."""
        have = self._pushed.blobs.setdefault(repository, set())
        uploaded = 0
        for part in node.walk():
            for blob in part.blobs:
                if blob.digest not in have:
                    uploaded += await self._put_blob(repository, blob)
                    have.add(blob.digest)
            reference = tag if part is node and tag is not None else part.digest
            await self.client.put_manifest(repository, reference, part.manifest, part.media_type)
        if tag is not None:
            self._pushed.tags.setdefault(repository, {})[tag] = node.digest
        return uploaded

    async def _put_blob(self, repository: str, blob: Blob) -> int:
        source = next((r for r, blobs in self._pushed.blobs.items() if blob.digest in blobs), None)
        location = None
        if source is not None and source != repository:
            location = await self.client.mount_blob(repository, blob.digest, source)
            if location is None:
                return 0  # mounted: nothing uploaded
        elif await self.client.head_blob(repository, blob.digest) is not None:
            return 0
        await self.client.upload_blob(
            repository, blob.digest, blob.size, _chunks(blob.data), location=location
        )
        return blob.size


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    view = memoryview(data)
    for start in range(0, len(view), UPLOAD_CHUNK):
        yield bytes(view[start : start + UPLOAD_CHUNK])
