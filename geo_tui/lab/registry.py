"""The lab registry's ASGI app: routes of the distribution API, auth, and manifest, tag and catalog handlers.

Blob and upload handlers live in `uploads.py`. Distribution 2.8 is the reference for every status and error
code: a path whose name or reference does not fit the route grammar is a plain 404 (no route matched), auth
comes next, then the name's length (NAME_INVALID), then the handler.
"""

from __future__ import annotations

import json
import logging
import posixpath
import re
import socket
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from geo_tui.registry import (
    DOCKER_LIST,
    DOCKER_SCHEMA1,
    DOCKER_SCHEMA1_SIGNED,
    OCI_INDEX,
    OCI_MANIFEST,
    InvalidManifest,
    is_valid_digest,
    manifest_digest,
    parse_manifest,
)

from .asgi import AccessLog, Failure, Receive, Request, Response, Scope, Send
from .auth import Access, AuthChallenge, TokenVerifier
from .notify import Notifier, event
from .schema1 import Unverified, verify_schema1
from .storage import LabStorage, catalog_key
from .uploads import UploadHandlers

__all__ = ["LabApp", "LabSettings"]

log = logging.getLogger(__name__)

# Distribution's grammar has `[-]*` as a separator, which Go's RE2 matches in linear time; Python's
# backtracking would take exponential time on it, and `-+` accepts the same names.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*(?::[0-9]+)?"
# A first component that reads as a domain may hold upper case (`Upper/app`), as in Distribution.
_NAME = rf"(?:{_DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
# Go's \w is ASCII: so is ours (re.ASCII below).
_ROUTES = [
    ("tags", re.compile(rf"/v2/(?P<name>{_NAME})/tags/list", re.ASCII)),
    ("manifest", re.compile(rf"/v2/(?P<name>{_NAME})/manifests/(?P<reference>{_TAG}|{_DIGEST})", re.ASCII)),
    ("uploads", re.compile(rf"/v2/(?P<name>{_NAME})/blobs/uploads/?", re.ASCII)),
    ("upload", re.compile(rf"/v2/(?P<name>{_NAME})/blobs/uploads/(?P<upload>[a-zA-Z0-9_.=-]+)", re.ASCII)),
    ("blob", re.compile(rf"/v2/(?P<name>{_NAME})/blobs/(?P<digest>{_DIGEST})", re.ASCII)),
    ("referrers", re.compile(rf"/v2/(?P<name>{_NAME})/referrers/(?P<digest>{_DIGEST})", re.ASCII)),
]
_METHODS = {
    "ping": {"GET", "HEAD"},
    "catalog": {"GET"},
    "tags": {"GET"},
    "manifest": {"GET", "HEAD", "PUT", "DELETE"},
    "uploads": {"POST"},
    "upload": {"GET", "PATCH", "PUT", "DELETE"},
    "blob": {"GET", "HEAD", "DELETE"},
    "referrers": {"GET"},
}
NAME_MAX = 255  # reference.NameTotalLengthMax
MANIFEST_MAX = 4 * 1024 * 1024  # Distribution refuses bigger manifest bodies
CATALOG_DEFAULT, CATALOG_MAX = 100, 1000
API_VERSION = {"Docker-Distribution-API-Version": "registry/2.0"}


@dataclass(frozen=True)
class LabSettings:
    """What a lab registry is configured with (see LabRegistry)."""

    realm: str
    service: str
    delete_enabled: bool = True
    schema1: bool = True
    read_only: bool = False
    # The OCI 1.1 referrers API (distribution spec v1.1 "Listing Referrers"); off, the lab answers as
    # Distribution 2.8 does, which has none (404 on the path, no OCI-Subject on a PUT).
    referrers: bool = False
    referrers_page_size: int = 100


@dataclass
class Route:
    kind: str
    name: str = ""
    reference: str = ""


def match_route(path: str) -> Route | None:
    if path == "/v2/" or path == "/v2":
        return Route("ping")
    if path == "/v2/_catalog":
        return Route("catalog")
    for kind, pattern in _ROUTES:
        if found := pattern.fullmatch(path):
            groups = found.groupdict()
            reference = groups.get("reference") or groups.get("upload") or groups.get("digest") or ""
            return Route(kind, groups["name"], reference)
    return None


def clean_path(path: str) -> str:
    """`path` without empty, `.` and `..` segments (trailing slash kept), as Go's path.Clean makes it."""
    cleaned = posixpath.normpath(path) if path else "/"
    cleaned = "/" + cleaned.lstrip("/")
    return cleaned + "/" if path.endswith("/") and cleaned != "/" else cleaned


def needed_access(request: Request, route: Route) -> tuple[Access, ...]:
    """The accesses Distribution's app.authorized asks for (pull for reads, pull+push for writes...)."""
    if route.kind == "ping":
        return ()
    if route.kind == "catalog":
        return (Access("registry", "catalog", "*"),)
    actions = {"GET": ["pull"], "HEAD": ["pull"], "DELETE": ["delete"]}.get(request.method, ["pull", "push"])
    needed = [Access("repository", route.name, action) for action in actions]
    if source := request.query.get("from"):  # a mount needs pull on the source repository
        needed.append(Access("repository", source, "pull"))
    return tuple(needed)


class LabApp:
    """The ASGI application of one lab registry."""

    def __init__(
        self,
        storage: LabStorage,
        settings: LabSettings,
        *,
        verifier: TokenVerifier | None = None,
        notifier: Notifier | None = None,
        access_log: AccessLog | None = None,
    ) -> None:
        self.storage = storage
        self.settings = settings
        self.verifier = verifier
        self.notifier = notifier
        self.access_log = access_log
        self.instance_id = str(uuid.uuid4())
        self.source_addr = socket.gethostname()
        self.uploads = UploadHandlers(self)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = Request.from_scope(scope, receive)
        try:
            response = await self.dispatch(request)
        except Failure as failure:
            response = failure.response()
        except ConnectionError:
            return
        except (
            Exception
        ) as exc:  # a fault of the lab itself (disk full...): one line, a 500 as Distribution's
            log.error(
                "lab registry: %s %s failed: %s: %s", request.method, request.path, type(exc).__name__, exc
            )
            response = Failure(500, "UNKNOWN", type(exc).__name__).response()
        response.headers = {**API_VERSION, **response.headers}
        size = await response.send(send, head=request.method == "HEAD")
        if self.access_log is not None:
            self.access_log.write(request, response.status, size)

    async def dispatch(self, request: Request) -> Response:
        cleaned = clean_path(request.path)
        if cleaned != request.path:  # Go's router redirects to the cleaned path
            return Response(301, {"Location": cleaned})
        route = match_route(request.path)
        if route is None or (route.kind == "referrers" and not self.settings.referrers):
            return Response(404, {"Content-Type": "text/plain; charset=utf-8"}, b"404 page not found\n")
        if request.method not in _METHODS[route.kind]:
            return Response(405, {"Content-Type": "text/plain; charset=utf-8"}, b"Method Not Allowed\n")
        self.authorize(request, route)
        if route.name and len(route.name) > NAME_MAX:
            # Distribution 2.8 means NAME_INVALID here but serves it as an unknown error (checked).
            raise Failure(500, "UNKNOWN", f"repository name {route.name[:40]}... is too long")
        writes = request.method in ("POST", "PUT", "PATCH", "DELETE")
        if self.settings.read_only and writes:
            return Response(405, {"Content-Type": "text/plain; charset=utf-8"}, b"Method not allowed\n")
        handlers = {
            "ping": self.ping,
            "catalog": self.catalog,
            "tags": self.tags,
            "manifest": self.manifest,
            "uploads": self.uploads.start,
            "upload": self.uploads.session,
            "blob": self.uploads.blob,
            "referrers": self.referrers,
        }
        return await handlers[route.kind](request, route)

    def authorize(self, request: Request, route: Route) -> None:
        if self.verifier is None:
            return
        needed = needed_access(request, route)
        try:
            self.verifier.authorize(request.headers.get("authorization"), needed)
        except AuthChallenge as challenge:
            header = challenge.www_authenticate(self.settings.realm, self.settings.service)
            raise Failure(
                401, "UNAUTHORIZED", challenge.detail(), headers={"WWW-Authenticate": header}
            ) from None

    def may_pull(self, request: Request, name: str) -> bool:
        """Whether the request's token grants pull on `name` (always, without token auth)."""
        if self.verifier is None:
            return True
        try:
            self.verifier.authorize(
                request.headers.get("authorization"), (Access("repository", name, "pull"),)
            )
        except AuthChallenge:
            return False
        return True

    def notify(self, request: Request, action: str, name: str, digest: str, **target: Any) -> None:
        if self.notifier is None:
            return
        self.notifier.publish(
            event(
                action,
                repository=name,
                digest=digest,
                request={
                    "id": str(uuid.uuid4()),
                    "addr": request.client,
                    "host": request.headers.get("host", ""),
                    "method": request.method,
                    "useragent": request.headers.get("user-agent", ""),
                },
                source_addr=self.source_addr,
                instance_id=self.instance_id,
                **target,
            )
        )

    # Handlers.
    async def ping(self, request: Request, route: Route) -> Response:
        return Response.json(200, {})

    async def catalog(self, request: Request, route: Route) -> Response:
        query = request.query
        try:
            limit = int(query.get("n", ""))
        except ValueError:
            limit = CATALOG_DEFAULT
        if limit < 0:
            limit = CATALOG_DEFAULT
        if limit > CATALOG_MAX:
            raise Failure(400, "PAGINATION_NUMBER_INVALID", {"n": limit})
        last = catalog_key(query.get("last", ""))
        names = [name for name in self.storage.manifests.repositories() if catalog_key(name) > last]
        page = names[:limit]
        headers = {}
        # Distribution links a next page whenever the page came back full, even if nothing follows.
        if limit and len(page) == limit:
            headers["Link"] = _next_link(request.path, limit, page[-1])
        return Response.json(200, {"repositories": page}, headers)

    async def tags(self, request: Request, route: Route) -> Response:
        # Distribution 2.8.2 ignores `n` and `last` here: the whole list, never a Link (checked).
        tags = self.storage.manifests.tags(route.name)
        if tags is None:
            raise Failure(404, "NAME_UNKNOWN", {"name": route.name})
        # A repository whose tags were all deleted lists `null`, Go's empty slice (checked).
        return Response.json(200, {"name": route.name, "tags": tags or None})

    async def manifest(self, request: Request, route: Route) -> Response:
        if request.method == "PUT":
            return await self.put_manifest(request, route)
        if request.method == "DELETE":
            return self.delete_manifest(request, route)
        name, reference = route.name, route.reference
        digest = (
            reference if is_valid_digest(reference) else self.storage.manifests.resolve_tag(name, reference)
        )
        media_type = self.storage.manifests.media_type(name, digest) if digest else None
        if digest is None or media_type is None:
            raise Failure(404, "MANIFEST_UNKNOWN", {"Name": name, "Revision": reference})
        digest, media_type = self._negotiate(request, name, reference, digest, media_type)
        content = self.storage.blobs.content(digest)
        headers = {"Content-Type": media_type, "Docker-Content-Digest": digest, "Etag": f'"{digest}"'}
        if request.method == "HEAD":
            return Response(200, headers, b"", length=len(content))
        self.notify(request, "pull", name, digest, media_type=media_type, size=len(content),
                    url=f"{request.base_url}/v2/{name}/manifests/{digest}",
                    tag=None if digest == reference else reference)  # fmt: skip
        return Response(200, headers, content)

    def _negotiate(
        self, request: Request, name: str, reference: str, digest: str, media_type: str
    ) -> tuple[str, str]:
        """What Distribution 2.8 serves a client whose Accept does not name the stored type (GitLab 600486):
        OCI content is hidden (404); a Docker list asked for by tag gives way to its linux/amd64 image.
        (2.8 would also rewrite a Docker v2 image as schema 1 by tag; the lab serves it as stored.)"""
        accepted = {
            part.split(";", 1)[0].strip().lower() for part in request.headers.get("accept", "").split(",")
        }
        if media_type in (OCI_MANIFEST, OCI_INDEX) and media_type not in accepted:
            raise Failure(
                404, "MANIFEST_UNKNOWN", f"{media_type} found, but the Accept header does not name it"
            )
        if media_type == DOCKER_LIST and media_type not in accepted and digest != reference:
            refs = parse_manifest(self.storage.blobs.content(digest), media_type)
            for child in refs.manifests:
                platform = child.platform or {}
                if (platform.get("os"), platform.get("architecture")) == ("linux", "amd64"):
                    child_type = self.storage.manifests.media_type(name, child.digest)
                    if child_type is not None:
                        return child.digest, child_type
            raise Failure(404, "MANIFEST_UNKNOWN", "no linux/amd64 image in the manifest list")
        return digest, media_type

    async def put_manifest(self, request: Request, route: Route) -> Response:
        name, reference = route.name, route.reference
        content = await request.body(MANIFEST_MAX)
        if content is None:
            raise Failure(400, "MANIFEST_INVALID", "manifest too big")
        try:
            refs = parse_manifest(content, request.headers.get("content-type"))
            digest = manifest_digest(content, refs.media_type)
        except InvalidManifest as exc:
            raise Failure(400, "MANIFEST_INVALID", exc.reason) from None
        if refs.media_type in (DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED) and not self.settings.schema1:
            # Distribution 2.8 without compatibility.schema1.enabled fails such a PUT with a 500.
            raise Failure(500, "UNKNOWN", "schema 1 manifests are not accepted here")
        if refs.media_type == DOCKER_SCHEMA1_SIGNED:
            try:
                verify_schema1(content)
            except Unverified as exc:
                raise Failure(400, "MANIFEST_UNVERIFIED", str(exc)) from None
        if is_valid_digest(reference) and reference != digest:
            raise Failure(400, "DIGEST_INVALID", f"manifest digest {digest} is not {reference}")
        failure: Failure | None = None
        for descriptor in (*refs.blobs, *refs.manifests):
            if descriptor.urls or self.storage.manifests.has_content(name, descriptor.digest):
                continue  # foreign layers live elsewhere
            if failure is None:
                failure = Failure(400, "MANIFEST_BLOB_UNKNOWN", descriptor.digest)
            else:
                failure.errors.append(("MANIFEST_BLOB_UNKNOWN", descriptor.digest))
        if failure is not None:
            raise failure
        self.storage.manifests.put(name, digest, content, refs.media_type)
        if refs.subject is not None:  # indexed whether or not the API is on, so a restart with it on lists it
            self.storage.manifests.link_referrer(name, refs.subject.digest, digest)
        tag = None if is_valid_digest(reference) else reference
        if tag is not None:
            self.storage.manifests.tag(name, tag, digest)
        location = f"{request.base_url}/v2/{name}/manifests/{digest}"
        self.notify(request, "push", name, digest, media_type=refs.media_type, size=len(content),
                    url=location, tag=tag)  # fmt: skip
        headers = {"Location": location, "Docker-Content-Digest": digest}
        if refs.subject is not None and self.settings.referrers:
            # What tells a client that this registry lists the referrer itself (no fallback tag needed).
            headers["OCI-Subject"] = refs.subject.digest
        return Response(201, headers)

    def delete_manifest(self, request: Request, route: Route) -> Response:
        if not self.settings.delete_enabled:
            raise Failure(405, "UNSUPPORTED")
        name, reference = route.name, route.reference
        if not is_valid_digest(reference):
            # Distribution 2.8 reads the reference as a digest: a tag is "digest invalid".
            raise Failure(400, "DIGEST_INVALID", reference)
        removed = self.storage.manifests.delete(name, reference)
        if removed is None:
            raise Failure(404, "MANIFEST_UNKNOWN", {"Name": name, "Revision": reference})
        try:
            subject = _subject_of(self.storage.blobs.content(reference))
        except FileNotFoundError:
            subject = None
        if subject is not None:
            self.storage.manifests.unlink_referrer(name, subject, reference)
        url = f"{request.base_url}/v2/{name}/manifests/{reference}"
        self.notify(request, "delete", name, reference, url=url)
        for tag in removed:  # then one event per tag it took along, digest-less, as 2.8 sends them
            self.notify(request, "delete", name, "", tag=tag)
        return Response(202)

    async def referrers(self, request: Request, route: Route) -> Response:
        """The referrers of a manifest, as distribution spec v1.1 lists them: an OCI index, empty (never
        a 404) when there are none, filtered by ``artifactType`` with ``OCI-Filters-Applied``, paged
        with a ``Link`` after ``referrers_page_size`` descriptors (the lab's ``last`` marks the page)."""
        name, subject = route.name, route.reference
        if not is_valid_digest(subject):
            raise Failure(400, "DIGEST_INVALID", subject)
        wanted = request.query.get("artifactType")
        descriptors = []
        for digest in self.storage.manifests.referrers(name, subject):
            media_type = self.storage.manifests.media_type(name, digest)
            if media_type is None:
                continue
            descriptor = _referrer_descriptor(digest, media_type, self.storage.blobs.content(digest))
            if wanted is None or descriptor.get("artifactType") == wanted:
                descriptors.append(descriptor)
        last = request.query.get("last", "")
        page = [d for d in descriptors if d["digest"] > last][: self.settings.referrers_page_size]
        headers = {"Content-Type": OCI_INDEX}
        if wanted is not None:
            headers["OCI-Filters-Applied"] = "artifactType"
        if page and page[-1]["digest"] != descriptors[-1]["digest"]:
            query = {"last": page[-1]["digest"], **({"artifactType": wanted} if wanted else {})}
            headers["Link"] = f'<{request.path}?{urlencode(query)}>; rel="next"'
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": page}
        return Response(200, headers, json.dumps(index).encode())


def _subject_of(content: bytes) -> str | None:
    try:
        document = json.loads(content)
        subject = document.get("subject") if isinstance(document, dict) else None
        digest = subject.get("digest") if isinstance(subject, dict) else None
    except (ValueError, RecursionError):
        return None
    return digest if isinstance(digest, str) and is_valid_digest(digest) else None


def _referrer_descriptor(digest: str, media_type: str, content: bytes) -> dict[str, Any]:
    """A referrer's descriptor: its ``artifactType`` (for an image manifest without one, its config's
    media type, as the spec says) and its ``annotations``."""
    descriptor: dict[str, Any] = {"mediaType": media_type, "digest": digest, "size": len(content)}
    try:
        document = json.loads(content)
    except (ValueError, RecursionError):
        return descriptor
    artifact_type = document.get("artifactType")
    config = document.get("config")
    if not artifact_type and isinstance(config, dict):
        artifact_type = config.get("mediaType")
    if isinstance(artifact_type, str) and artifact_type:
        descriptor["artifactType"] = artifact_type
    if isinstance(document.get("annotations"), dict) and document["annotations"]:
        descriptor["annotations"] = document["annotations"]
    return descriptor


def _next_link(path: str, limit: int, last: str) -> str:
    # Go's url.Values.Encode sorts the keys: last before n.
    return f'<{path}?{urlencode({"last": last, "n": limit})}>; rel="next"'
