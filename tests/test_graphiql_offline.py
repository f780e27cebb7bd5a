"""GraphiQL loads from the API itself, at pinned versions: offline and behind a bank's proxy.

This machine has no internet, so headless Chromium rendering the IDE proves no script or style comes
from a CDN; the HTTP check proves each served file is the exact pinned one its page names (sha384).
"""

from __future__ import annotations

import base64
import hashlib
import re
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.async_api import Request, expect

from dev.extra import extra_api
from dev.stack import DevStack
from tests.browser import chromium_context, ensure_chromium

pytestmark = pytest.mark.stack

ASSET = re.compile(r'(?:src|href)="(?P<url>[^"]+)"\s+integrity="sha384-(?P<hash>[^"]+)"')


@pytest.fixture
async def ide_api(stack: DevStack) -> AsyncIterator[str]:
    async with extra_api(stack, {"API_GRAPHIQL": "true"}) as url:
        yield url


async def test_the_ide_page_names_only_its_own_assets_and_each_is_the_pinned_file(ide_api: str) -> None:
    async with httpx.AsyncClient(base_url=ide_api) as http:
        page = await http.get("/graphql", headers={"Accept": "text/html"})
        assert page.status_code == 200 and "graphiql" in page.text.lower()
        assets = ASSET.findall(page.text)
        assert len(assets) == 7, assets
        assert "unpkg.com" not in page.text and "https://" not in "".join(url for url, _ in assets)
        for url, expected in assets:
            served = await http.get(url)
            assert served.status_code == 200, url
            assert base64.b64encode(hashlib.sha384(served.content).digest()).decode() == expected, url


async def test_graphiql_renders_in_a_browser_without_the_internet(ide_api: str) -> None:
    chromium = ensure_chromium()
    foreign: list[str] = []
    origin = urlsplit(ide_api).netloc

    def note(request: Request) -> None:
        if urlsplit(request.url).netloc != origin:
            foreign.append(request.url)

    with tempfile.TemporaryDirectory() as profile:
        async with chromium_context(chromium, Path(profile)) as browser:
            page = browser.pages[0] if browser.pages else await browser.new_page()
            page.on("request", note)
            await page.goto(f"{ide_api}/graphql")
            await expect(page.locator(".graphiql-query-editor")).to_be_visible(timeout=30_000)
    assert not foreign, foreign
