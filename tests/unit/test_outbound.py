"""The outbound policy over real connections: after DNS resolution and on every redirect hop."""

from __future__ import annotations

import aiohttp
import pytest
from aiohttp import web

from lockgate.outbound import OutboundPolicy, credentials_problem, parse_networks


async def _serve(app: web.Application) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]


async def test_a_redirect_to_a_forbidden_address_is_not_followed():
    forbidden = web.Application()
    async def secret(request):
        return web.Response(text="secret")

    forbidden.router.add_get("/", secret)
    forbidden_runner, forbidden_port = await _serve(forbidden)
    hop = web.Application()

    async def redirect(request):
        raise web.HTTPFound(f"http://localhost:{forbidden_port}/")

    hop.router.add_get("/", redirect)
    hop_runner, hop_port = await _serve(hop)
    policy = OutboundPolicy(refuse_special=True, own_ports=frozenset({forbidden_port}))
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(socket_factory=policy.socket_factory)) as s:
            with pytest.raises(aiohttp.ClientConnectorError, match="own listener"):
                async with s.get(f"http://127.0.0.1:{hop_port}/") as response:
                    await response.text()
        async with aiohttp.ClientSession() as open_session:  # the same hop without the policy gets through
            async with open_session.get(f"http://127.0.0.1:{hop_port}/") as response:
                assert await response.text() == "secret"
    finally:
        await hop_runner.cleanup()
        await forbidden_runner.cleanup()


def test_rules_and_their_order():
    strict = OutboundPolicy(refuse_special=True, own_ports=frozenset({8288}), own_hosts=frozenset({"10.0.0.5"}),
                            allow=parse_networks(["169.254.10.0/24"], "outbound_allow"),
                            deny=parse_networks(["10.9.0.0/16", "fd00::/8"], "outbound_deny"))
    assert "link-local" in strict.problem("169.254.169.254", 80)
    assert "link-local" in strict.problem("fe80::1", 80)
    assert "link-local" in strict.problem("::ffff:169.254.169.254", 80)  # IPv4-mapped IPv6
    assert strict.problem("169.254.10.7", 80) is None  # the allow list is checked first
    assert "outbound_deny" in strict.problem("10.9.1.1", 443)
    assert "outbound_deny" in strict.problem("fd00::1", 443)
    assert "own listener" in strict.problem("127.0.0.1", 8288)
    assert "own listener" in strict.problem("10.0.0.5", 8288)
    assert strict.problem("127.0.0.1", 3000) is None  # apps on this machine
    assert strict.problem("10.0.0.7", 8288) is None  # private ranges: other hosts
    assert strict.problem("192.168.1.20", 80) is None
    assert "not a destination" in strict.problem("0.0.0.0", 80)
    dev = OutboundPolicy(deny=parse_networks(["192.168.0.0/16"], "outbound_deny"))
    assert dev.problem("169.254.169.254", 80) is None and dev.problem("192.168.1.1", 80)
    with pytest.raises(ValueError, match="outbound_allow"):
        parse_networks(["not-an-ip"], "outbound_allow")


def test_credentials_in_urls():
    assert credentials_problem("https://user:pw@example.com/x")
    assert credentials_problem("https://user@example.com/x")
    assert credentials_problem("https://example.com/x?user=a@b") is None
    assert credentials_problem("https://example.com/api/inngest") is None
