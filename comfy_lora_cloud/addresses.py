"""Which network addresses a request we send on the user's behalf may reach.

A URL the user configures for us to call (the notification webhook) is a request this machine
makes: pointed at ``127.0.0.1``, a LAN router or the cloud's metadata service, it would reach what
only this machine can reach. So an outbound URL is refused when its address is

* a cloud metadata service (``169.254.169.254``, ``fd00:ec2::254``, ``metadata.google.internal``)
  or not the address of any one host (``0.0.0.0``, ``::``, multicast, reserved): always; no webhook
  receiver lives there;
* loopback (``127.0.0.0/8``, ``::1``, ``localhost``), link-local (``169.254.0.0/16``,
  ``fe80::/10``) or any other non-public range (``10/8``, ``172.16/12``, ``192.168/16``,
  ``fc00::/7``, ``100.64/10``...): unless the user allows private addresses explicitly
  (a receiver on their own network, such as n8n or Home Assistant, is what that is for).

Two checks use these rules: settings validation for a host written as an address or a known name
(:func:`literal_host_problem`, no DNS), and the sender after resolving the name
(:func:`address_problem` for every address the name resolves to), which then connects to the
address it checked, so a name that changes its answer between the check and the connection
(DNS rebinding) reaches nothing it was not allowed to.
"""

from __future__ import annotations

import ipaddress
import re
import socket

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254",  # AWS, GCP, Azure, DigitalOcean, Oracle...
    "169.254.170.2",  # AWS ECS task metadata
    "100.100.100.200",  # Alibaba Cloud
    "fd00:ec2::254",  # AWS over IPv6
))
METADATA_NAMES = frozenset({"metadata.google.internal", "metadata.goog", "metadata"})
ALLOW_SETTING = "webhook_allow_private"
_ALLOW_HINT = (f"set {ALLOW_SETTING} = true (lora-cloud config set {ALLOW_SETTING} true) to send to a "
               "receiver on this machine or your own network")
_LEGACY_IPV4 = re.compile(r"^(0x[0-9a-f]+|[0-9]+)(\.(0x[0-9a-f]+|[0-9]+)){0,3}$", re.IGNORECASE)


def _unmapped(ip: IPAddress) -> IPAddress:
    """``::ffff:127.0.0.1`` is 127.0.0.1 to the socket that connects to it."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def address_problem(address: str | IPAddress, *, allow_private: bool) -> str | None:
    """Why an outbound request must not go to ``address`` (a sentence), or None when it may."""
    ip = _unmapped(ipaddress.ip_address(address.split("%", 1)[0] if isinstance(address, str) else address))
    if ip in METADATA_ADDRESSES:
        return f"{ip} is a cloud metadata address, never a webhook receiver"
    if ip.is_unspecified:
        return f"{ip} is the unspecified address, not the address of a host"
    if ip.is_multicast:
        return f"{ip} is a multicast address, not the address of a host"
    if ip.is_loopback:  # before "reserved": ::1 lies in IPv6's reserved ::/8
        kind = "a loopback address (this machine)"
    elif ip.is_link_local:
        kind = "a link-local address"
    elif ip.is_reserved:
        return f"{ip} is not the address of a host (a reserved range)"
    elif ip.is_global:
        return None
    else:
        kind = "a private address"
    return None if allow_private else f"{ip} is {kind}; {_ALLOW_HINT}"


def literal_ip(host: str) -> IPAddress | None:
    """``host`` as an address when it is written as one: ``127.0.0.1``, ``[::1]`` and the old
    IPv4 spellings that resolvers still accept (``2130706433``, ``0x7f.1``, ``127.1``). No DNS."""
    text = host.strip().strip("[]")
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        pass
    if _LEGACY_IPV4.match(text):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(text))
        except OSError:
            return None
    return None


def literal_host_problem(host: str, *, allow_private: bool) -> str | None:
    """What settings validation can tell about a URL's host without resolving it: an address, a
    ``localhost`` name or a metadata service's name. A sentence, or None."""
    name = host.strip().rstrip(".").lower()
    if name in METADATA_NAMES:
        return f"{name} is a cloud metadata service, never a webhook receiver"
    ip = literal_ip(name)
    if ip is not None:
        return address_problem(ip, allow_private=allow_private)
    if (name == "localhost" or name.endswith(".localhost")) and not allow_private:
        return f"{name} is this machine (loopback); {_ALLOW_HINT}"
    return None


__all__ = ["ALLOW_SETTING", "METADATA_ADDRESSES", "METADATA_NAMES", "address_problem", "literal_host_problem",
           "literal_ip"]
