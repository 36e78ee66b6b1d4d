"""The destination guard: which URLs and addresses hookline refuses to deliver to."""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from hookline.delivery.resolver import GuardedResolver
from hookline.destinations import (
    MAX_URL_CHARS,
    BlockedAddressError,
    DestinationPolicy,
    find_blocked_destination,
    parse_allowed_networks,
)
from hookline.errors import BlockedDestination, InvalidEndpointURL, InvalidInput

LOCAL_DEVELOPMENT = parse_allowed_networks("127.0.0.0/8, ::1/128")
EVERYTHING = parse_allowed_networks("0.0.0.0/0, ::/0")


def refusal_of(policy: DestinationPolicy, address: str) -> str:
    """The message check_address gives for ``address``, failing the test if it passes."""
    with pytest.raises(BlockedDestination) as caught:
        policy.check_address(address)
    return caught.value.message


def assert_all_blocked(addresses: Iterable[str], policy: DestinationPolicy | None = None) -> None:
    policy = policy or DestinationPolicy()
    for address in addresses:
        assert not policy.is_allowed(address), address
        refusal_of(policy, address)


# Blocked categories.


@pytest.mark.parametrize("address", ["127.0.0.1", "127.255.255.254", "::1"])
def test_loopback_address__is_blocked(address: str) -> None:
    assert "a loopback address" in refusal_of(DestinationPolicy(), address)


@pytest.mark.parametrize(
    "address", ["10.0.0.5", "172.16.0.1", "172.31.255.254", "192.168.1.1", "fc00::1", "fd12::1"]
)
def test_private_address__is_blocked(address: str) -> None:
    assert " is a private " in refusal_of(DestinationPolicy(), address)


@pytest.mark.parametrize("address", ["169.254.169.254", "169.254.0.1", "fe80::1", "fe80::1%eth0"])
def test_link_local_address__is_blocked(address: str) -> None:
    assert "a link-local address" in refusal_of(DestinationPolicy(), address)


@pytest.mark.parametrize("address", ["100.64.0.1", "100.127.255.254"])
def test_shared_address_space__is_blocked(address: str) -> None:
    assert "shared (carrier-grade NAT)" in refusal_of(DestinationPolicy(), address)


@pytest.mark.parametrize("address", ["224.0.0.1", "239.255.255.250", "ff02::1", "ff0e::1"])
def test_multicast_address__is_blocked(address: str) -> None:
    assert "a multicast address" in refusal_of(DestinationPolicy(), address)


@pytest.mark.parametrize("address", ["0.0.0.0", "0.1.2.3", "::"])
def test_unspecified_address__is_blocked(address: str) -> None:
    assert "unspecified" in refusal_of(DestinationPolicy(), address)


def test_broadcast_address__is_blocked() -> None:
    assert "the broadcast address" in refusal_of(DestinationPolicy(), "255.255.255.255")


@pytest.mark.parametrize("address", ["240.0.0.1", "250.1.2.3", "4000::1", "100::1"])
def test_reserved_or_discard_address__is_blocked(address: str) -> None:
    assert_all_blocked([address])


@pytest.mark.parametrize(
    "address", ["192.0.2.1", "198.51.100.7", "203.0.113.9", "2001:db8::1", "3fff::1"]
)
def test_documentation_address__is_blocked(address: str) -> None:
    assert "a documentation address" in refusal_of(DestinationPolicy(), address)


@pytest.mark.parametrize("address", ["198.18.0.1", "198.19.255.254", "2001:2::1"])
def test_benchmarking_address__is_blocked(address: str) -> None:
    assert "a benchmarking address" in refusal_of(DestinationPolicy(), address)


def test_deprecated_site_local_ipv6_address__is_blocked() -> None:
    assert "a site-local address" in refusal_of(DestinationPolicy(), "fec0::1")


@pytest.mark.parametrize(
    "address", ["8.8.8.8", "1.1.1.1", "93.184.215.14", "2606:4700:4700::1111", "2a00:1450::1"]
)
def test_public_unicast_address__is_allowed(address: str) -> None:
    policy = DestinationPolicy()

    policy.check_address(address)

    assert policy.is_allowed(address)


def test_refusal_message__names_the_setting_and_a_range_to_allow() -> None:
    message = refusal_of(DestinationPolicy(), "10.0.0.5")

    assert message == (
        "Destination address 10.0.0.5 is a private address; hookline refuses to deliver there "
        "unless WEBHOOK_ALLOWED_NETWORKS allows it "
        "(for example WEBHOOK_ALLOWED_NETWORKS=10.0.0.0/8)."
    )


def test_blocked_destination__is_a_422_invalid_input() -> None:
    with pytest.raises(InvalidInput) as caught:
        DestinationPolicy().check_address("127.0.0.1")

    assert caught.value.status_code == 422
    assert caught.value.code == "blocked_destination"


def test_text_that_is_not_an_address__raises_value_error() -> None:
    with pytest.raises(ValueError, match="is not an IP address"):
        DestinationPolicy().is_allowed("localhost")


# IPv6 forms that carry an IPv4 address.


@pytest.mark.parametrize("address", ["::ffff:127.0.0.1", "::ffff:10.0.0.5", "::ffff:0.0.0.0"])
def test_ipv4_mapped_address_embedding_a_blocked_ipv4__is_blocked(address: str) -> None:
    assert "embeds the IPv4 address" in refusal_of(DestinationPolicy(), address)


def test_ipv4_mapped_address_embedding_a_public_ipv4__is_allowed() -> None:
    assert DestinationPolicy().is_allowed("::ffff:8.8.8.8")


@pytest.mark.parametrize("address", ["::127.0.0.1", "::10.0.0.5", "::169.254.169.254"])
def test_ipv4_compatible_address_embedding_a_blocked_ipv4__is_blocked(address: str) -> None:
    assert_all_blocked([address])


def test_nat64_address_embedding_loopback__is_blocked() -> None:
    message = refusal_of(DestinationPolicy(), "64:ff9b::7f00:1")

    assert "embeds the IPv4 address 127.0.0.1, a loopback address" in message


@pytest.mark.parametrize("address", ["64:ff9b::10.0.0.5", "64:ff9b:1::192.168.0.1"])
def test_nat64_address_embedding_a_private_ipv4__is_blocked(address: str) -> None:
    assert "a private address" in refusal_of(DestinationPolicy(), address)


@pytest.mark.parametrize("address", ["64:ff9b::8.8.8.8", "64:ff9b:1::8.8.8.8"])
def test_nat64_address_embedding_a_public_ipv4__is_allowed(address: str) -> None:
    assert DestinationPolicy().is_allowed(address)


def test_local_use_nat64_address_in_a_layout_we_cannot_read__is_blocked() -> None:
    # Bits between the /48 prefix and the last 32 mean a translator layout other than /96.
    message = refusal_of(DestinationPolicy(), "64:ff9b:1:7f00:1::808:808")

    assert "local-use NAT64" in message


@pytest.mark.parametrize(
    ("address", "embedded"),
    [("2002:7f00:1::1", "127.0.0.1"), ("2002:a00:5::", "10.0.0.5")],
)
def test_6to4_address_embedding_a_blocked_ipv4__is_blocked(address: str, embedded: str) -> None:
    assert f"embeds the IPv4 address {embedded}" in refusal_of(DestinationPolicy(), address)


def test_6to4_address_embedding_a_public_ipv4__is_allowed() -> None:
    assert DestinationPolicy().is_allowed("2002:808:808::1")


def teredo(server: str, client: str) -> str:
    """A Teredo address (RFC 4380) for ``server`` and ``client``, the client bits inverted."""
    server_bits = int(ipaddress.IPv4Address(server))
    client_bits = int(ipaddress.IPv4Address(client)) ^ 0xFFFFFFFF
    prefix = int(ipaddress.IPv6Address("2001::"))
    return str(ipaddress.IPv6Address(prefix | server_bits << 64 | client_bits))


def test_teredo_address_with_a_loopback_client__is_blocked() -> None:
    message = refusal_of(DestinationPolicy(), teredo("65.54.227.120", "127.0.0.1"))

    assert "embeds the IPv4 address 127.0.0.1" in message


def test_teredo_address_with_a_private_server__is_blocked() -> None:
    assert_all_blocked([teredo("10.0.0.1", "8.8.8.8")])


def test_teredo_address_with_public_server_and_client__is_allowed() -> None:
    assert DestinationPolicy().is_allowed(teredo("65.54.227.120", "8.8.8.8"))


# The allow list.


def test_allowed_network__lets_its_addresses_through() -> None:
    policy = DestinationPolicy(parse_allowed_networks("10.0.0.0/8"))

    assert policy.is_allowed("10.1.2.3")
    assert not policy.is_allowed("192.168.1.1")
    assert not policy.is_allowed("127.0.0.1")


def test_loopback_allowed__covers_ipv4_mapped_and_compatible_loopback() -> None:
    policy = DestinationPolicy(LOCAL_DEVELOPMENT)

    for address in ("127.0.0.1", "127.0.0.53", "::1", "::ffff:127.0.0.1", "::127.0.0.1"):
        policy.check_address(address)


def test_ipv6_loopback_allowed__does_not_allow_ipv4_loopback() -> None:
    policy = DestinationPolicy(parse_allowed_networks("::1/128"))

    assert policy.is_allowed("::1")
    assert not policy.is_allowed("127.0.0.1")


@pytest.mark.parametrize(
    "address",
    [
        "169.254.169.254",
        "169.254.0.1",
        "fe80::1",
        "fe80::a9fe:a9fe%eth0",
        "::ffff:169.254.169.254",
        "64:ff9b::169.254.169.254",
        "2002:a9fe:a9fe::1",
    ],
)
def test_link_local_covered_by_an_allowed_network__stays_blocked(address: str) -> None:
    for allowed in ("169.254.0.0/16, fe80::/10", "0.0.0.0/0, ::/0"):
        message = refusal_of(DestinationPolicy(parse_allowed_networks(allowed)), address)

        assert "WEBHOOK_ALLOWED_NETWORKS cannot allow them" in message


def test_link_local_refusal__does_not_suggest_allowing_it() -> None:
    message = refusal_of(DestinationPolicy(), "169.254.169.254")

    assert "for example" not in message
    assert "cloud metadata" in message


# URL syntax.


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.com/webhooks",
        "http://hooks.example.com:8080/in?source=hookline#ignored",
        "https://8.8.8.8/hook",
        "https://[2606:4700:4700::1111]:8443/hook",
        "https://bücher.example/hook",
        "https://_service.example.com./hook",
    ],
)
def test_well_formed_public_url__passes(url: str) -> None:
    DestinationPolicy().check_url(url)


@pytest.mark.parametrize(
    "url",
    ["ftp://example.com/", "file:///etc/passwd", "javascript:alert(1)", "gopher://example.com/"],
)
def test_url_with_a_scheme_other_than_http__is_refused(url: str) -> None:
    with pytest.raises(InvalidEndpointURL, match="delivers only to http and https"):
        DestinationPolicy().check_url(url)


@pytest.mark.parametrize("url", ["example.com/webhooks", "//example.com/webhooks"])
def test_url_without_a_scheme__is_refused(url: str) -> None:
    with pytest.raises(InvalidEndpointURL, match="no scheme"):
        DestinationPolicy().check_url(url)


@pytest.mark.parametrize("url", ["http:///webhooks", "https:example.com", "http:/example.com/"])
def test_url_without_a_host__is_refused(url: str) -> None:
    with pytest.raises(InvalidEndpointURL, match="no host"):
        DestinationPolicy().check_url(url)


def test_http_url_with_https_only__is_refused_naming_the_setting() -> None:
    policy = DestinationPolicy(https_only=True)

    with pytest.raises(InvalidEndpointURL, match="WEBHOOK_HTTPS_ONLY"):
        policy.check_url("http://hooks.example.com/")
    policy.check_url("https://hooks.example.com/")


@pytest.mark.parametrize(
    "url",
    [
        "https://alice:hunter2@hooks.example.com/",
        "https://alice@hooks.example.com/",
        "https://:hunter2@hooks.example.com/",
        "https://@hooks.example.com/",
        "https://alice:hunter2@127.0.0.1/",
    ],
)
def test_url_with_credentials__is_refused_without_repeating_them(url: str) -> None:
    with pytest.raises(InvalidEndpointURL, match="credentials") as caught:
        DestinationPolicy().check_url(url)

    assert "hunter2" not in caught.value.message
    assert "alice" not in caught.value.message


def test_unparsable_url_with_credentials__does_not_repeat_them() -> None:
    with pytest.raises(InvalidEndpointURL) as caught:
        DestinationPolicy().check_url("https://alice:hunter2@[::1/")

    assert "hunter2" not in caught.value.message


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.com/\r\nX-Injected: yes",
        "https://hooks.example.com/in\nHost: evil",
        "https://hooks.example.com/\r",
        "https://hooks.exa mple.com/",
        "https://hooks.example.com/\t",
        " https://hooks.example.com/",
        "https://hooks.example.com/\x00",
        "https://hooks.example.com/\x7f",
        "https://hooks.example.com/\u2028",
        "https://hooks\u00a0example.com/",
        "https://hooks\u200b.example.com/",
    ],
)
def test_url_with_whitespace_or_control_characters__is_refused(url: str) -> None:
    with pytest.raises(InvalidEndpointURL, match="whitespace or control character"):
        DestinationPolicy().check_url(url)


def test_url_longer_than_the_limit__is_refused() -> None:
    prefix = "https://hooks.example.com/"
    longest = prefix + "a" * (MAX_URL_CHARS - len(prefix))
    policy = DestinationPolicy()

    policy.check_url(longest)
    with pytest.raises(InvalidEndpointURL, match="at most 2048"):
        policy.check_url(longest + "a")


@pytest.mark.parametrize(
    "url",
    [
        "http://%31%32%37.0.0.1/",
        "http://127.0.0.1%00.example.com/",
        "http://hooks..example.com/",
        "http://hooks.example.com../",
        "http://" + "a" * 64 + ".example.com/",
    ],
)
def test_url_whose_host_is_not_a_host_name__is_refused(url: str) -> None:
    with pytest.raises(InvalidEndpointURL, match="not a valid host name"):
        DestinationPolicy().check_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "http://hooks.example.com\\@127.0.0.1/",
        "http://hooks.example.com:99999/",
        "http://hooks.example.com:port/",
        "http://[::1/",
    ],
)
def test_malformed_url__is_refused(url: str) -> None:
    with pytest.raises(InvalidEndpointURL, match="not a well-formed URL"):
        DestinationPolicy().check_url(url)


def test_url_with_port_zero__is_refused() -> None:
    with pytest.raises(InvalidEndpointURL, match="port 0"):
        DestinationPolicy().check_url("http://hooks.example.com:0/")


@pytest.mark.parametrize("url", ["http://[v1.example]/", "http://[hooks.example.com]/"])
def test_bracketed_host_that_is_not_ipv6__is_refused(url: str) -> None:
    with pytest.raises(InvalidEndpointURL):
        DestinationPolicy().check_url(url)


# Hosts written as IP addresses, in every spelling a resolver accepts.


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "2130706433",
        "0x7f.1",
        "0X7F.0.0.1",
        "0177.0.0.1",
        "127.1",
        "127.0.1",
        "0x7f000001",
        "017700000001",
        "127.0.0.1.",
        "\uff11\uff12\uff17.\uff10.\uff10.\uff11",  # full-width digits
        "127\u30020\u30020\u30021",  # ideographic full stops
    ],
)
def test_url_with_loopback_in_an_odd_ipv4_spelling__is_blocked(host: str) -> None:
    with pytest.raises(BlockedDestination, match=re.escape("127.0.0.1")) as caught:
        DestinationPolicy().check_url(f"http://{host}:8080/hook")

    assert "a loopback address" in caught.value.message


def test_url_with_odd_ipv4_spelling__is_allowed_when_its_network_is() -> None:
    policy = DestinationPolicy(LOCAL_DEVELOPMENT)

    for host in ("0x7f.1", "2130706433", "0177.0.0.1", "127.1"):
        policy.check_url(f"http://{host}/")


@pytest.mark.parametrize(
    "host", ["0xa9.0xfe.0xa9.0xfe", "2852039166", "0251.0376.0251.0376", "169.254.43518"]
)
def test_url_with_metadata_address_in_an_odd_spelling__is_blocked(host: str) -> None:
    with pytest.raises(BlockedDestination, match=re.escape("169.254.169.254")):
        DestinationPolicy(EVERYTHING).check_url(f"http://{host}/latest/meta-data/")


@pytest.mark.parametrize(
    "host", ["1.2.3.4.5", "256.1.1.1", "1.2.3.4294967296", "08.0.0.1", "0x.1", "0xg.1", "1e3.1"]
)
def test_url_with_a_host_ending_in_a_number_that_is_no_ipv4_address__is_refused(
    host: str,
) -> None:
    with pytest.raises(InvalidEndpointURL, match="not a valid one"):
        DestinationPolicy().check_url(f"http://{host}/")


def test_host_name_with_a_numeric_first_label__is_a_name_not_an_address() -> None:
    DestinationPolicy().check_url("http://127.0.0.1.nip.example/")


@pytest.mark.parametrize(
    "host",
    [
        "[::1]",
        "[::]",
        "[::ffff:127.0.0.1]",
        "[::ffff:7f00:1]",
        "[::127.0.0.1]",
        "[64:ff9b::127.0.0.1]",
        "[2002:7f00:1::]",
        "[fe80::1%25eth0]",
        "[fd00::1]",
    ],
)
def test_url_with_a_blocked_ipv6_literal__is_blocked(host: str) -> None:
    with pytest.raises(BlockedDestination):
        DestinationPolicy().check_url(f"http://{host}:8080/")


def test_url_with_ipv4_mapped_loopback__is_allowed_by_the_ipv4_loopback_network() -> None:
    DestinationPolicy(parse_allowed_networks("127.0.0.0/8")).check_url("http://[::ffff:127.0.0.1]/")


# Checks that resolve names.


def fake_dns(monkeypatch: pytest.MonkeyPatch, answers: dict[str, list[str]]) -> None:
    """Make the running loop's getaddrinfo answer from ``answers``, as the edge of the world."""

    async def getaddrinfo(host: str, port: int, **_: Any) -> list[tuple[Any, ...]]:
        if host not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [
            (
                socket.AF_INET6 if ":" in address else socket.AF_INET,
                socket.SOCK_STREAM,
                6,
                "",
                (address, port),
            )
            for address in answers[host]
        ]

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", getaddrinfo)


async def test_hostname_resolving_to_loopback__is_blocked_at_registration() -> None:
    with pytest.raises(BlockedDestination) as caught:
        await DestinationPolicy().check_destination("http://localhost:8080/hook")

    assert "Endpoint URL host localhost resolves to" in caught.value.message
    assert "a loopback address" in caught.value.message


async def test_hostname_resolving_to_loopback__is_allowed_for_local_development() -> None:
    await DestinationPolicy(LOCAL_DEVELOPMENT).check_destination("http://localhost:8080/hook")


async def test_hostname_resolving_to_public_addresses__passes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_dns(monkeypatch, {"hooks.example.com": ["93.184.215.14", "2606:4700::6812:1"]})

    await DestinationPolicy().check_destination("https://hooks.example.com/in")


async def test_hostname_resolving_to_one_private_among_public_addresses__is_blocked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_dns(monkeypatch, {"hooks.example.com": ["93.184.215.14", "10.0.0.5"]})

    with pytest.raises(
        BlockedDestination, match=re.escape("resolves to 10.0.0.5, which is a private")
    ):
        await DestinationPolicy().check_destination("https://hooks.example.com/in")


async def test_hostname_that_does_not_resolve__is_an_invalid_url(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_dns(monkeypatch, {})

    with pytest.raises(InvalidEndpointURL, match="could not be resolved"):
        await DestinationPolicy().check_destination("https://nowhere.example.invalid/")


async def test_ip_literal_destination__is_judged_without_dns(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_dns(monkeypatch, {})
    policy = DestinationPolicy()

    await policy.check_destination("https://8.8.8.8/in")
    with pytest.raises(BlockedDestination):
        await policy.check_destination("https://0x7f.1/in")


# The resolver used by the delivery session.


async def test_resolver__refuses_localhost_by_default() -> None:
    resolver = GuardedResolver(DestinationPolicy())

    with pytest.raises(BlockedAddressError) as caught:
        await resolver.resolve("localhost", 80)
    await resolver.close()

    assert isinstance(caught.value, BlockedDestination)
    assert isinstance(caught.value, OSError)
    assert "a loopback address" in caught.value.message


async def test_resolver__returns_addresses_of_an_allowed_name() -> None:
    resolver = GuardedResolver(DestinationPolicy(LOCAL_DEVELOPMENT))

    results = await resolver.resolve("localhost", 80)
    await resolver.close()

    assert results
    assert {ipaddress.ip_address(result["host"]).is_loopback for result in results} == {True}
    assert {result["port"] for result in results} == {80}


@dataclass
class Receiver:
    """A local webhook receiver and how many deliveries reached it."""

    port: int = 0
    deliveries: int = 0


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    state = Receiver()

    async def accept(request: web.Request) -> web.Response:
        state.deliveries += 1
        return web.Response(text="delivered")

    app = web.Application()
    app.router.add_post("/hook", accept)
    async with TestServer(app, host="127.0.0.1") as server:
        assert server.port is not None
        state.port = server.port
        yield state


async def post_through_guard(policy: DestinationPolicy, url: str) -> str:
    resolver = GuardedResolver(policy)
    try:
        connector = aiohttp.TCPConnector(resolver=resolver)
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.post(url, json={"event": "ping"}) as response,
        ):
            response.raise_for_status()
            return await response.text()
    finally:
        await resolver.close()


async def test_delivery_to_a_name_resolving_to_loopback__is_refused_at_connect(
    receiver: Receiver,
) -> None:
    url = f"http://localhost:{receiver.port}/hook"

    with pytest.raises(aiohttp.ClientConnectorError) as caught:
        await post_through_guard(DestinationPolicy(), url)

    assert isinstance(find_blocked_destination(caught.value), BlockedAddressError)
    assert receiver.deliveries == 0


async def test_delivery_to_a_hex_spelled_loopback__is_refused_at_connect(
    receiver: Receiver,
) -> None:
    # aiohttp does not treat 0x7f.1 as an IP address, so it asks the resolver, which refuses.
    url = f"http://0x7f.1:{receiver.port}/hook"

    with pytest.raises(aiohttp.ClientConnectorError) as caught:
        await post_through_guard(DestinationPolicy(), url)

    assert find_blocked_destination(caught.value) is not None
    assert receiver.deliveries == 0


async def test_delivery_to_loopback__succeeds_when_allowed(receiver: Receiver) -> None:
    url = f"http://localhost:{receiver.port}/hook"

    body = await post_through_guard(DestinationPolicy(LOCAL_DEVELOPMENT), url)

    assert body == "delivered"
    assert receiver.deliveries == 1


def test_find_blocked_destination__ignores_ordinary_connection_errors() -> None:
    try:
        try:
            raise ConnectionRefusedError("refused")
        except ConnectionRefusedError as exc:
            raise RuntimeError("delivery failed") from exc
    except RuntimeError as wrapped:
        assert find_blocked_destination(wrapped) is None


# WEBHOOK_ALLOWED_NETWORKS.


def test_allowed_networks_setting__parses_into_networks() -> None:
    assert parse_allowed_networks("127.0.0.0/8, ::1/128") == (
        ipaddress.ip_network("127.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
    )


def test_allowed_networks_setting__accepts_blanks_spaces_and_bare_addresses() -> None:
    assert parse_allowed_networks("") == ()
    assert parse_allowed_networks(" 10.0.0.0/8 ,, 192.168.1.10\n") == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("192.168.1.10/32"),
    )


@pytest.mark.parametrize("value", ["localhost", "10.0.0.0/33", "10.0.0/8", "::1/129", "10/8"])
def test_allowed_networks_setting_with_a_bad_entry__names_it(value: str) -> None:
    with pytest.raises(ValueError, match=re.escape(f"WEBHOOK_ALLOWED_NETWORKS entry '{value}'")):
        parse_allowed_networks(f"127.0.0.0/8, {value}")


def test_allowed_networks_setting_with_host_bits__suggests_the_network() -> None:
    with pytest.raises(
        ValueError, match=re.escape("host bits set; write the network as 10.0.0.0/8")
    ):
        parse_allowed_networks("10.0.0.5/8")
