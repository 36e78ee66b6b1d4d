"""The destination guard: which endpoint URLs hookline may deliver to.

A webhook URL is chosen by whoever registers the endpoint, and hookline then makes requests to
it from inside the operator's network. Without a guard, that is server-side request forgery: a
URL can point at the loopback interface, a database on a private subnet, or the cloud metadata
service at 169.254.169.254. The guard refuses every address that is not globally routable
unicast, unless the operator lets a range through with ``WEBHOOK_ALLOWED_NETWORKS``.

It acts twice:

* when an endpoint is registered, :meth:`DestinationPolicy.check_destination` checks the URL's
  syntax and every address its host resolves to, so the caller gets a clear 422 at once;
* when a delivery connects, :meth:`DestinationPolicy.check_resolved` judges the addresses
  aiohttp is about to connect to (the sender's resolver calls it). A name can resolve to a
  public address at registration and to 127.0.0.1 a minute later (DNS rebinding), so only
  this second check is binding. aiohttp
  does not consult a resolver for a host written as an IP address, so the sender also runs
  :meth:`DestinationPolicy.check_url`, which judges such hosts, before each attempt.

Link-local ranges (169.254.0.0/16 and fe80::/10) stay blocked even when an allowed network
covers them, because they hold cloud metadata services whose credentials must never leak.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeAlias

from yarl import URL

from hookline.errors import BlockedDestination, InvalidEndpointURL

__all__ = [
    "ALLOWED_NETWORKS_SETTING",
    "HTTPS_ONLY_SETTING",
    "MAX_URL_CHARS",
    "BlockedAddressError",
    "DestinationPolicy",
    "IPAddress",
    "IPNetwork",
    "find_blocked_destination",
    "parse_allowed_networks",
]

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network

ALLOWED_NETWORKS_SETTING = "WEBHOOK_ALLOWED_NETWORKS"
HTTPS_ONLY_SETTING = "WEBHOOK_HTTPS_ONLY"

MAX_URL_CHARS = 2048
RESOLVE_TIMEOUT_SECONDS = 5
# RFC 1035 limits: a whole name and each of its labels.
MAX_HOSTNAME_CHARS = 253
MAX_LABEL_CHARS = 63

_SCHEMES = ("http", "https")

_LINK_LOCAL = (ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("fe80::/10"))

_NAT64_WELL_KNOWN = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052
_NAT64_LOCAL_USE = ipaddress.ip_network("64:ff9b:1::/48")  # RFC 8215
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")  # deprecated by RFC 4291
_IPV4_BITS = 32
_IPV4_MASK = (1 << _IPV4_BITS) - 1
# In 64:ff9b:1::/48 the bits between the prefix and the last 32 are zero only when the
# translator uses the /96 layout, the one layout whose IPv4 address we can read for certain.
_NAT64_LOCAL_USE_MIDDLE_MASK = (1 << (96 - 48)) - 1

# Ranges the flags of ipaddress do not refuse reliably: in Python 3.11 100.64.0.0/10 is neither
# private nor global, and the two IPv6 ranges are newer than its tables (is_global is True).
_NEVER_GLOBAL: tuple[IPNetwork, ...] = (
    ipaddress.ip_network("100.64.0.0/10"),  # shared address space, RFC 6598
    _NAT64_LOCAL_USE,
    ipaddress.ip_network("3fff::/20"),  # documentation, RFC 9637
)

# Only used to tell the operator what kind of address was refused and which range to allow;
# the verdict itself comes from _is_public_unicast.
_KINDS: tuple[tuple[IPNetwork, str], ...] = tuple(
    (ipaddress.ip_network(cidr), kind)
    for cidr, kind in (
        ("0.0.0.0/8", "an unspecified ('this network') address"),
        ("0.0.0.0/32", "the unspecified address"),
        ("10.0.0.0/8", "a private address"),
        ("100.64.0.0/10", "a shared (carrier-grade NAT) address"),
        ("127.0.0.0/8", "a loopback address"),
        ("169.254.0.0/16", "a link-local address"),
        ("172.16.0.0/12", "a private address"),
        ("192.0.0.0/24", "an IETF protocol assignment address"),
        ("192.0.2.0/24", "a documentation address"),
        ("192.168.0.0/16", "a private address"),
        ("198.18.0.0/15", "a benchmarking address"),
        ("198.51.100.0/24", "a documentation address"),
        ("203.0.113.0/24", "a documentation address"),
        ("224.0.0.0/4", "a multicast address"),
        ("240.0.0.0/4", "a reserved address"),
        ("255.255.255.255/32", "the broadcast address"),
        ("::/128", "the unspecified address"),
        ("::1/128", "a loopback address"),
        ("64:ff9b:1::/48", "a local-use NAT64 address whose IPv4 address cannot be read"),
        ("100::/64", "a discard-only address"),
        ("2001::/23", "an IETF protocol assignment address"),
        ("2001:2::/48", "a benchmarking address"),
        ("2001:db8::/32", "a documentation address"),
        ("3fff::/20", "a documentation address"),
        ("fc00::/7", "a private (unique local) address"),
        ("fe80::/10", "a link-local address"),
        ("fec0::/10", "a site-local address"),
        ("ff00::/8", "a multicast address"),
    )
)

# A host name after IDNA encoding: letters, digits, hyphens and underscores in non-empty
# labels, with at most one trailing dot. Anything else (such as '%') is refused rather than
# guessed at, because parsers disagree about what it means.
_HOSTNAME = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*\.?")
_AUTHORITY = re.compile(r"[^/?#]*")
_NUMERIC_LABEL = re.compile(r"[0-9]+|0[xX][0-9a-fA-F]*")


class BlockedAddressError(BlockedDestination, OSError):
    """A connection was refused because the host resolved to an address the policy blocks.

    It is an :class:`OSError` so that aiohttp treats it as a failed name lookup and raises
    ``aiohttp.ClientConnectorDNSError`` with this error as its cause; see
    :func:`find_blocked_destination`.
    """


@dataclass(frozen=True)
class _Refusal:
    """Why an address is refused: the address judged (perhaps an embedded IPv4 address), what
    kind of address it is, and the range to allow, or None when allowing cannot help."""

    judged: IPAddress
    kind: str
    suggestion: IPNetwork | None


@dataclass(frozen=True)
class _Target:
    """The parts of a checked URL that name where a delivery will connect."""

    host: str  # as shown to people: Unicode for an internationalised name
    lookup_host: str  # as given to the resolver: IDNA-encoded ASCII
    port: int
    literal: IPAddress | None


def parse_allowed_networks(value: str) -> tuple[IPNetwork, ...]:
    """Parse a WEBHOOK_ALLOWED_NETWORKS value such as ``"127.0.0.0/8, ::1/128"``.

    Entries are separated by commas or whitespace; a bare address means just that address.
    Raises ValueError, with a sentence naming the bad entry, for anything that is not a network.
    """
    networks: list[IPNetwork] = []
    for entry in re.split(r"[\s,]+", value.strip()):
        if entry:
            networks.append(_parse_network(entry))
    return tuple(networks)


def _parse_network(entry: str) -> IPNetwork:
    try:
        return ipaddress.ip_network(entry, strict=True)
    except ValueError as exc:
        try:
            loose = ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ValueError(
                f"{ALLOWED_NETWORKS_SETTING} entry {entry!r} is not an IP network; write "
                "networks in CIDR notation separated by commas, such as 127.0.0.0/8, ::1/128."
            ) from exc
        raise ValueError(
            f"{ALLOWED_NETWORKS_SETTING} entry {entry!r} has host bits set; "
            f"write the network as {loose}."
        ) from exc


def find_blocked_destination(error: BaseException) -> BlockedDestination | None:
    """Return the BlockedDestination behind ``error`` (itself or anywhere in its causes).

    A refusal at connect time reaches the sender wrapped in an aiohttp connection error; this
    tells it apart from an ordinary failure, which is worth retrying while a refusal is not.
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, BlockedDestination):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


class DestinationPolicy:
    """Decides which endpoint URLs and addresses hookline may deliver to.

    By default only globally routable unicast addresses pass. ``allowed_networks`` (from
    WEBHOOK_ALLOWED_NETWORKS) lets more through, except link-local ranges, which stay blocked.
    ``https_only`` (WEBHOOK_HTTPS_ONLY) refuses plain http URLs.
    """

    def __init__(
        self,
        allowed_networks: Sequence[IPNetwork] = (),
        https_only: bool = False,
    ) -> None:
        self.allowed_networks: tuple[IPNetwork, ...] = tuple(allowed_networks)
        self.https_only = https_only

    def check_url(self, url: str) -> None:
        """Check the URL's syntax without any DNS lookup.

        Raises InvalidEndpointURL unless the URL is an absolute http or https URL (https only
        when ``https_only`` is set) of at most MAX_URL_CHARS characters, with a host, without
        credentials, whitespace or control characters. A host written as an IP address, in any
        spelling the system resolver accepts (``127.1``, ``0x7f.1``, ``2130706433``, a bracketed
        IPv6 address), is judged here and raises BlockedDestination if refused. aiohttp connects
        to an IP address without asking a resolver, so this is the only check such a URL gets
        and the sender must call it before each delivery.
        """
        self._target(url)

    def check_address(self, address: str) -> None:
        """Raise BlockedDestination if hookline may not connect to this IP address.

        ``address`` is an IPv4 or IPv6 address in standard notation, optionally with an IPv6
        zone (``fe80::1%eth0``); anything else raises ValueError.
        """
        self._enforce(_parse_address(address), f"Destination address {address}")

    def is_allowed(self, address: str) -> bool:
        """Whether hookline may connect to this IP address (same rules as check_address)."""
        return self._judge(_parse_address(address)) is None

    async def check_destination(self, url: str) -> None:
        """Check the URL, then every address its host resolves to right now.

        Raises InvalidEndpointURL for a bad URL or a name that does not resolve, and
        BlockedDestination if any resolved address is refused. This is the check to make when
        an endpoint is registered; it cannot stop DNS rebinding, which the resolver does.
        """
        target = self._target(url)
        if target.literal is not None:
            return

        loop = asyncio.get_running_loop()
        try:
            # A registration request should not hang on a DNS server that never answers.
            async with asyncio.timeout(RESOLVE_TIMEOUT_SECONDS):
                infos = await loop.getaddrinfo(
                    target.lookup_host, target.port, type=socket.SOCK_STREAM
                )
        except TimeoutError as exc:
            raise InvalidEndpointURL(
                f"Endpoint URL host {target.host} did not resolve within "
                f"{RESOLVE_TIMEOUT_SECONDS} seconds; check the host name and try again."
            ) from exc
        except (OSError, UnicodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise InvalidEndpointURL(
                f"Endpoint URL host {target.host} could not be resolved ({reason}); check the "
                "host name, and try again once its DNS records exist."
            ) from exc
        if not infos:
            raise InvalidEndpointURL(
                f"Endpoint URL host {target.host} could not be resolved (no addresses); check "
                "the host name, and try again once its DNS records exist."
            )

        for *_, sockaddr in infos:
            resolved = str(sockaddr[0])
            self._enforce(
                _parse_address(resolved),
                f"Endpoint URL host {target.host} resolves to {resolved}, which",
            )

    def check_resolved(self, host: str, address: str) -> None:
        """Raise BlockedAddressError if ``host`` resolved to an ``address`` that is refused.

        The delivery session's resolver (:mod:`hookline.delivery.resolver`) calls this for
        every address a lookup returns, right before aiohttp connects to it.
        """
        subject = f"Endpoint URL host {host} resolves to {address}, which"
        self._enforce(_parse_address(address), subject, BlockedAddressError)

    def _target(self, url: str) -> _Target:
        _check_characters(url)
        parsed = _parse_url(url)
        self._check_scheme(parsed)
        target = _target_of(url, parsed)
        if target.literal is not None:
            subject = f"Endpoint URL host {target.host}"
            spelled_oddly = target.host != str(target.literal)
            if isinstance(target.literal, ipaddress.IPv4Address) and spelled_oddly:
                subject += f" (the IPv4 address {target.literal})"
            self._enforce(target.literal, subject)
        return target

    def _check_scheme(self, parsed: URL) -> None:
        scheme = parsed.scheme
        if not scheme:
            raise InvalidEndpointURL(
                "Endpoint URL has no scheme; write it in full, such as "
                "https://example.com/webhooks."
            )
        if scheme not in _SCHEMES:
            raise InvalidEndpointURL(
                f"Endpoint URL scheme {scheme!r} is not supported; hookline delivers only to "
                "http and https URLs."
            )
        if self.https_only and scheme != "https":
            raise InvalidEndpointURL(
                f"Endpoint URL uses http, but {HTTPS_ONLY_SETTING} is on, so hookline delivers "
                f"only over https; use an https URL, or turn {HTTPS_ONLY_SETTING} off."
            )

    def _enforce(
        self,
        address: IPAddress,
        subject: str,
        error: type[BlockedDestination] = BlockedDestination,
    ) -> None:
        """Raise ``error`` about ``subject`` if ``address`` is refused."""
        refusal = self._judge(address)
        if refusal is not None:
            raise error(_refusal_message(subject, address, refusal))

    def _judge(self, address: IPAddress) -> _Refusal | None:
        """Return why ``address`` is refused, or None if hookline may connect to it."""
        # An IPv4-mapped or IPv4-compatible address reaches the very same host as the IPv4
        # address inside it, so it is judged, and matched against the allow list, as that.
        host = _unwrap_ipv4(address)
        if _is_link_local(host):
            return _Refusal(host, _kind_of(host), None)

        # A translated address (NAT64, 6to4, Teredo) is forwarded to the IPv4 addresses inside
        # it; link-local stays out however the allow list reads.
        relays = _relayed_ipv4s(host)
        for relay in relays or ():
            if _is_link_local(relay):
                return _Refusal(relay, _kind_of(relay), None)

        if self._allows(address) or self._allows(host):
            return None
        if relays is not None:
            for relay in relays:
                refusal = self._judge(relay)
                if refusal is not None:
                    return refusal
            return None
        if _is_public_unicast(host):
            return None
        return _Refusal(host, _kind_of(host), _suggested_network(host))

    def _allows(self, address: IPAddress) -> bool:
        return any(address in network for network in self.allowed_networks)


def _check_characters(url: str) -> None:
    if len(url) > MAX_URL_CHARS:
        raise InvalidEndpointURL(
            f"Endpoint URL is {len(url)} characters long; hookline accepts at most "
            f"{MAX_URL_CHARS}, so use a shorter URL."
        )
    for position, char in enumerate(url):
        # Control characters (CR and LF above all) could split the request line into extra
        # headers, and whitespace makes parsers disagree about where the host ends.
        if char.isspace() or unicodedata.category(char)[0] in "CZ":
            raise InvalidEndpointURL(
                f"Endpoint URL contains a whitespace or control character ({char!r}) at "
                f"position {position}; remove it, or percent-encode it in the path or query."
            )


def _parse_url(url: str) -> URL:
    # The URL is parsed by yarl, the parser aiohttp itself uses, so the host judged here is
    # the host the delivery will connect to (yarl also folds look-alikes such as full-width
    # digits to ASCII, which a different parser would miss).
    try:
        parsed = URL(url)
    except ValueError as exc:
        # yarl's message can quote the authority, and with it any credentials.
        detail = "" if "@" in url else f" ({exc})"
        raise InvalidEndpointURL(
            f"Endpoint URL is not a well-formed URL{detail}; give an absolute http or https "
            "URL such as https://example.com/webhooks."
        ) from exc
    return parsed


def _target_of(url: str, parsed: URL) -> _Target:
    lookup_host = parsed.raw_host
    if not parsed.absolute or not lookup_host:
        raise InvalidEndpointURL(
            "Endpoint URL has no host; write it in full, such as https://example.com/webhooks."
        )
    # The authority as written, because yarl forgets an empty user name ("https://@host/")
    # and the brackets around an IPvFuture literal ("http://[v1.x]/").
    written_authority = _AUTHORITY.match(url.partition("://")[2])
    authority = written_authority.group() if written_authority else ""
    if "@" in authority or parsed.raw_user is not None or parsed.raw_password is not None:
        raise InvalidEndpointURL(
            "Endpoint URL contains credentials (a user name or password before '@'); hookline "
            "does not send them, so remove them from the URL and have the receiver check the "
            "webhook signature instead."
        )
    port = parsed.port
    if not port:
        raise InvalidEndpointURL(
            "Endpoint URL port 0 cannot be connected to; use a port from 1 to 65535."
        )
    host = parsed.host or lookup_host

    if ":" in lookup_host:
        return _Target(host, lookup_host, port, _parse_ipv6_literal(host))
    # yarl would treat the inside of [v1.x] as a host name; only IPv6 belongs in brackets.
    if authority.startswith("["):
        raise InvalidEndpointURL(
            f"Endpoint URL host [{host}] is not an IPv6 address; only IPv6 addresses go in "
            "brackets."
        )
    _check_hostname(host, lookup_host)
    return _Target(host, lookup_host, port, _parse_numeric_ipv4(host, lookup_host))


def _parse_ipv6_literal(host: str) -> IPAddress:
    try:
        return _parse_address(host)
    except ValueError as exc:
        raise InvalidEndpointURL(
            f"Endpoint URL host [{host}] is not a valid IPv6 address; check the address "
            "between the brackets."
        ) from exc


def _check_hostname(host: str, lookup_host: str) -> None:
    labels = lookup_host.rstrip(".").split(".")
    if (
        _HOSTNAME.fullmatch(lookup_host) is None
        or len(lookup_host) > MAX_HOSTNAME_CHARS
        or any(len(label) > MAX_LABEL_CHARS for label in labels)
    ):
        raise InvalidEndpointURL(
            f"Endpoint URL host {host!r} is not a valid host name; use letters, digits, "
            "hyphens and dots, such as hooks.example.com."
        )


def _parse_numeric_ipv4(host: str, lookup_host: str) -> ipaddress.IPv4Address | None:
    """Read a host whose last label is a number as an IPv4 address, or return None.

    Besides dotted quads, the system resolver (like inet_aton) accepts one to four parts,
    each decimal, octal with a leading 0 or hexadecimal with 0x, the last part filling the
    remaining bytes: ``127.1``, ``0x7f.1``, ``0177.0.0.1`` and ``2130706433`` all mean
    127.0.0.1. Following the WHATWG URL standard, a host ending in a number that is not such
    an address is refused rather than sent to DNS, where it could mean anything.
    """
    parts = lookup_host.removesuffix(".").split(".")
    if _NUMERIC_LABEL.fullmatch(parts[-1]) is None:
        return None

    values = [_parse_ipv4_part(part) for part in parts]
    leading, last = values[:-1], values[-1]
    last_limit = 1 << (8 * (5 - len(values)))
    if (
        len(values) > 4
        or any(value is None or value > 0xFF for value in leading)
        or last is None
        or last >= last_limit
    ):
        raise InvalidEndpointURL(
            f"Endpoint URL host {host} looks like an IPv4 address but is not a valid one; "
            "write the address as four decimal numbers from 0 to 255, such as 203.0.113.7."
        )

    number = last
    for index, value in enumerate(leading):
        number |= (value or 0) << (8 * (3 - index))
    return ipaddress.IPv4Address(number)


def _parse_ipv4_part(part: str) -> int | None:
    if part[:2].lower() == "0x":
        digits, base = part[2:], 16
    elif len(part) > 1 and part.startswith("0"):
        digits, base = part[1:], 8
    else:
        digits, base = part, 10
    try:
        return int(digits, base) if digits.isascii() and digits.isalnum() else None
    except ValueError:
        return None


def _parse_address(address: str) -> IPAddress:
    # The zone of an IPv6 address names an interface, not a different destination.
    without_zone, _, _ = address.partition("%")
    try:
        return ipaddress.ip_address(without_zone)
    except ValueError as exc:
        raise ValueError(f"{address!r} is not an IP address.") from exc


def _unwrap_ipv4(address: IPAddress) -> IPAddress:
    """The IPv4 address an IPv4-mapped or IPv4-compatible IPv6 address stands for."""
    if isinstance(address, ipaddress.IPv4Address):
        return address
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    # :: and ::1 lie in the IPv4-compatible range but are IPv6's own unspecified and loopback.
    if address in _IPV4_COMPATIBLE and int(address) > 1:
        return ipaddress.IPv4Address(int(address) & _IPV4_MASK)
    return address


def _relayed_ipv4s(address: IPAddress) -> tuple[ipaddress.IPv4Address, ...] | None:
    """The IPv4 addresses a NAT64, 6to4 or Teredo address is forwarded to, or None."""
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address in _NAT64_WELL_KNOWN:
        return (ipaddress.IPv4Address(int(address) & _IPV4_MASK),)
    if address in _NAT64_LOCAL_USE:
        if (int(address) >> _IPV4_BITS) & _NAT64_LOCAL_USE_MIDDLE_MASK:
            return None
        return (ipaddress.IPv4Address(int(address) & _IPV4_MASK),)
    if address.sixtofour is not None:
        return (address.sixtofour,)
    if address.teredo is not None:
        return address.teredo
    return None


def _is_link_local(address: IPAddress) -> bool:
    return any(address in network for network in _LINK_LOCAL)


def _is_public_unicast(address: IPAddress) -> bool:
    """Whether ``address`` is globally routable unicast, the only kind open by default."""
    if (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    ):
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.is_site_local:
        return False
    if any(address in network for network in _NEVER_GLOBAL):
        return False
    # is_global alone is not enough: Python 3.11 counts multicast as global.
    return address.is_global


def _kind_of(address: IPAddress) -> str:
    matches = [(network.prefixlen, kind) for network, kind in _KINDS if address in network]
    if matches:
        return max(matches)[1]
    if address.is_reserved:
        return "a reserved address"
    return "not a globally routable unicast address"


def _suggested_network(address: IPAddress) -> IPNetwork:
    containing = [network for network, _ in _KINDS if address in network]
    if containing:
        return max(containing, key=lambda network: network.prefixlen)
    return ipaddress.ip_network(address)


def _refusal_message(subject: str, address: IPAddress, refusal: _Refusal) -> str:
    if refusal.judged == address:
        what = f"{subject} is {refusal.kind}"
    else:
        what = f"{subject} embeds the IPv4 address {refusal.judged}, {refusal.kind}"
    if refusal.suggestion is None:
        return (
            f"{what}; hookline never delivers to link-local addresses, which include cloud "
            f"metadata services, and {ALLOWED_NETWORKS_SETTING} cannot allow them. Use a "
            "routable address."
        )
    return (
        f"{what}; hookline refuses to deliver there unless {ALLOWED_NETWORKS_SETTING} allows "
        f"it (for example {ALLOWED_NETWORKS_SETTING}={refusal.suggestion})."
    )
