"""Untrusted paths into the lab registry's app (in process, no network): never a crash, never a file
outside its storage, whatever the name, reference, digest or upload id."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from geo_tui.lab.registry import LabApp, LabSettings, clean_path, match_route
from geo_tui.lab.storage import LabStorage

SEGMENT = st.text(alphabet=st.sampled_from("aZ09._-:/%@+~ \\x"), min_size=0, max_size=12)
TAILS = ["tags/list", "manifests/{}", "blobs/{}", "blobs/uploads/{}", "blobs/uploads/"]


def _files(root: Path) -> set[Path]:
    return {path for path in root.parent.rglob("*") if not path.is_relative_to(root)}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    name=SEGMENT,
    reference=SEGMENT,
    tail=st.sampled_from(TAILS),
    method=st.sampled_from(["GET", "PUT", "DELETE", "PATCH", "HEAD", "POST"]),
)
def test_any_path_is_answered_inside_the_storage(
    tmp_path: Path, name: str, reference: str, tail: str, method: str
) -> None:
    root = tmp_path / "storage"
    app = LabApp(LabStorage(root), LabSettings(realm="http://realm", service="s"))
    before = _files(root)
    path = f"/v2/{name}/{tail.format(reference)}"

    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://lab") as client:
            return await client.request(method, path, content=b"{}" if method in ("PUT", "PATCH") else None)

    try:
        response = asyncio.run(send())
    except httpx.InvalidURL:
        return  # httpx itself refuses to send it
    assert response.status_code < 500, response.text  # names here are short: a 500 is a fault of the lab
    assert _files(root) == before, "something was written outside the storage root"


def test_routes_and_cleaning() -> None:
    assert match_route("/v2/") is not None and match_route("/v2/").kind == "ping"  # type: ignore[union-attr]
    route = match_route("/v2/group/app/manifests/v1")
    assert route is not None and (route.kind, route.name, route.reference) == ("manifest", "group/app", "v1")
    assert match_route("/v2/group/App/tags/list") is None  # only a leading domain may hold upper case
    assert match_route("/v2/a/blobs/uploads/../../x") is None
    assert match_route("/v2/a/manifests/\u00e9t\u00e9") is None  # \\w is ASCII, as in Go
    assert clean_path("/v2/a//b/./c/../tags/list") == "/v2/a/b/tags/list"
    assert clean_path("/v2/a/blobs/uploads/") == "/v2/a/blobs/uploads/"


def test_a_fault_of_the_lab_is_a_500_in_one_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "storage"
    app = LabApp(LabStorage(root), LabSettings(realm="http://realm", service="s"))
    (root / "uploads").rmdir()
    (root / "uploads").write_text("not a directory")  # every new upload session now fails

    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://lab") as client:
            return await client.post("/v2/group/app/blobs/uploads/")

    response = asyncio.run(send())
    assert (response.status_code, response.json()["errors"][0]["code"]) == (500, "UNKNOWN")
    assert [r.getMessage().count("\n") for r in caplog.records if r.name == "geo_tui.lab.registry"] == [0]
    assert "POST /v2/group/app/blobs/uploads/ failed" in caplog.text
