"""The lab registry: a small OCI distribution registry of geo-tui's own, for the demo and the tests.

It serves what the engine uses (ping, catalog and tags with paging, manifests, blobs, uploads and mounts),
keeps content on the filesystem, checks Docker token JWTs, and sends Distribution-format notifications,
answering like CNCF Distribution 2.8 does, errors included. Start one with::

    with LabRegistry(root, trust_pem=cert_pem, issuer="gitlab-issuer") as lab:
        print(lab.url)
"""

from __future__ import annotations

from .server import LabRegistry, LabStartError

__all__ = ["LabRegistry", "LabStartError"]
