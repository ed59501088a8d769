"""The lab registry (geo_tui.lab.LabRegistry) behind the interface tests use of `Distribution`.

Same constructor options, the same `url`/`host`/`port`/`name`/`running`, `start`/`stop`/`restart`, token
minting, and the access log (the lab writes Distribution's Apache combined lines), so an e2e test runs
against either kind unchanged. `kind` says which one a test got.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from geo_tui.lab import LabRegistry
from tests.support.distribution import RegistryProbe


class LabInstance(RegistryProbe):
    """One LabRegistry with its own storage, access log and port (kept across stop/start)."""

    kind = "lab"

    def __init__(
        self,
        workdir: Path | str,
        *,
        port: int | None = None,
        referrers: bool = False,
        referrers_page_size: int = 100,
        **options: Any,
    ) -> None:
        """`options` are RegistryProbe's; `extra_config` takes what a `geo-tui init` snippet sets: auth.token
        and the notification endpoint. `referrers` turns on the OCI 1.1 referrers API, which Distribution
        2.8 lacks."""
        super().__init__(workdir, **options)
        self.referrers = referrers
        self.referrers_page_size = referrers_page_size
        self._port = port or 0
        self._lab: LabRegistry | None = None

    def __repr__(self) -> str:
        return f"<LabInstance {self.name} {self.url} {'running' if self.running else 'stopped'}>"

    @property
    def port(self) -> int:
        return self._lab.port if self._lab is not None else self._port

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def running(self) -> bool:
        return self._lab is not None and self._lab.running

    @property
    def pid(self) -> int | None:
        """The lab runs inside the test process."""
        return os.getpid() if self.running else None

    def _snippet_options(self) -> dict[str, Any]:
        """The lab's options with `extra_config` (Distribution's YAML keys) applied over them."""
        extra = self.extra_config or {}
        options: dict[str, Any] = {
            "auth": self.auth,
            "trust_pem": self.key_pair.cert_pem if self.key_pair else None,
            "issuer": self.issuer,
            "service": self.service,
            "token_realm": self.token_realm,
            "notification_url": self.notification_url,
            "notification_secret": self.notification_secret,
        }
        token = extra.get("auth", {}).get("token")
        if token is not None:
            options["auth"] = "token"
            options["token_realm"] = token.get("realm", options["token_realm"])
            options["issuer"] = token.get("issuer", options["issuer"])
            options["service"] = token.get("service", options["service"])
            if "rootcertbundle" in token:
                options["trust_pem"] = Path(token["rootcertbundle"]).read_bytes()
        endpoints = extra.get("notifications", {}).get("endpoints") or []
        if endpoints:
            options["notification_url"] = endpoints[0]["url"]
            secret = endpoints[0].get("headers", {}).get("Authorization")
            options["notification_secret"] = secret[0] if secret else None
        return options

    def _make(self) -> LabRegistry:
        return LabRegistry(
            self.root_dir,
            name=self.name,
            port=self.port,
            **self._snippet_options(),
            delete_enabled=self.delete_enabled,
            access_log=self.access_log_path,
            schema1=self.schema1,
            read_only=self.readonly,
            referrers=self.referrers,
            referrers_page_size=self.referrers_page_size,
        )

    def start(self) -> LabInstance:
        """Start (or restart, on the same port and storage) and wait until `GET /v2/` answers."""
        if self.running:
            return self
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._lab = self._make()  # options (readonly...) are read at each start, as Distribution's
        self._lab.start()
        self._port = self._lab.port
        return self

    def stop(self) -> None:
        if self._lab is not None:
            self._lab.stop()

    def log_tail(self, lines: int = 30) -> str:
        path = self.access_log_path
        text = path.read_text(errors="replace").splitlines()[-lines:] if path.exists() else []
        return f"--- {path.name} (last {len(text)} lines) ---\n" + "\n".join(text)
