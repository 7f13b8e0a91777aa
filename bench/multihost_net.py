"""Test hosts for the multi-host drill: network namespaces, veth pairs and a bridge (iproute2).

Hosts sit on a back network, a bridge in a switch namespace of its own, so that nothing of
it is visible in the root namespace. Hosts the load reaches (the gateways, and the fake
WeChat, which phones reach over the internet) also get a front link to the root
namespace: a /30 whose root end is the only address this module adds there, and which
goes when the link does. Names carry the drill's pid, so two drills never collide, and
everything is removed by :meth:`Topology.remove` whatever state the build stopped in.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import signal
import subprocess
from dataclasses import dataclass, field

BACK_NET = "10.231.0"  # inside the drill's namespaces only: never routed from the root
FRONT_PREFIX = "10.231"  # 10.231.X.0/24 in the root: X picked where the root has no route
COMMAND_TIMEOUT = 10.0


class NetError(RuntimeError):
    pass


def ip(*args: str, check: bool = True) -> str:
    """One iproute2 command, bounded in time."""
    try:
        done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NetError(f"ip {' '.join(args)}: {exc}") from None
    if check and done.returncode != 0:
        raise NetError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def sweep_leftovers() -> list[str]:
    """Remove what drills killed with SIGKILL left behind: the namespaces named after a pid that
    no longer runs (their veth pairs go with them), after stopping the processes still inside
    them, by pid. A drill still running keeps its own. Returns what was removed."""
    removed = []
    for line in ip("netns", "list").splitlines():
        name = line.split(" ", 1)[0]
        match = re.fullmatch(r"wxm(\d+)(sw|sto|up|rx|a|b)", name)
        if match is None or _running(int(match.group(1))):
            continue
        for pid in ip("netns", "pids", name, check=False).split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        try:
            ip("netns", "del", name)
            removed.append(name)
        except NetError:
            continue  # not ours to insist on: the next drill tries again
    return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class Host:
    name: str  # short role name: sto, up, rx, a, b
    netns: str
    back_ip: str
    back_if: str  # the host's end of its back link
    switch_if: str  # the bridge's end: taking it down is pulling the cable at the switch
    front_ip: str | None = None  # the host's end of its front link
    root_ip: str | None = None  # the root's end of it
    root_if: str | None = None


@dataclass
class Topology:
    tag: str  # unique per run, e.g. the drill's pid
    hosts: dict[str, Host] = field(default_factory=dict)
    namespaces: list[str] = field(default_factory=list)
    root_links: list[str] = field(default_factory=list)
    front_octet: int = 0

    @property
    def switch(self) -> str:
        return f"wxm{self.tag}sw"

    def build(self, back: dict[str, int], front: list[str]) -> None:
        """``back``: role -> last octet on the back network; ``front``: roles that get a front link."""
        self.front_octet = _free_front_octet(int(self.tag) if self.tag.isdigit() else 7)
        self._netns(self.switch)
        bridge = "br0"
        ip("-n", self.switch, "link", "add", bridge, "type", "bridge")
        ip("-n", self.switch, "link", "set", bridge, "up")
        for role, octet in back.items():
            netns = f"wxm{self.tag}{role}"
            self._netns(netns)
            host = Host(role, netns, f"{BACK_NET}.{octet}", f"b{self.tag}{role}", f"s{self.tag}{role}")
            ip("link", "add", host.back_if, "netns", netns, "type", "veth", "peer", "name", host.switch_if,
               "netns", self.switch)  # fmt: skip
            ip("-n", self.switch, "link", "set", host.switch_if, "master", bridge)
            ip("-n", self.switch, "link", "set", host.switch_if, "up")
            ip("-n", netns, "addr", "add", f"{host.back_ip}/24", "dev", host.back_if)
            ip("-n", netns, "link", "set", host.back_if, "up")
            if role in front:
                slot = 4 * front.index(role)
                base = f"{FRONT_PREFIX}.{self.front_octet}"
                host.root_ip, host.front_ip = f"{base}.{slot + 1}", f"{base}.{slot + 2}"
                host.root_if = f"f{self.tag}{role}"
                front_if = f"g{self.tag}{role}"
                ip("link", "add", host.root_if, "type", "veth", "peer", "name", front_if, "netns", netns)
                self.root_links.append(host.root_if)
                ip("addr", "add", f"{host.root_ip}/30", "dev", host.root_if)
                ip("link", "set", host.root_if, "up")
                ip("-n", netns, "addr", "add", f"{host.front_ip}/30", "dev", front_if)
                ip("-n", netns, "link", "set", front_if, "up")
            self.hosts[role] = host

    def _netns(self, name: str) -> None:
        ip("netns", "add", name)
        self.namespaces.append(name)
        ip("-n", name, "link", "set", "lo", "up")

    def cut(self, role: str) -> None:
        """Pull the host's back cable at the switch: its packets go nowhere, nothing errors at once."""
        ip("-n", self.switch, "link", "set", self.hosts[role].switch_if, "down")

    def restore(self, role: str) -> None:
        ip("-n", self.switch, "link", "set", self.hosts[role].switch_if, "up")

    def exec_prefix(self, role: str) -> list[str]:
        return ["ip", "netns", "exec", self.hosts[role].netns]

    def remove(self) -> list[str]:
        """Delete every link and namespace made; returns what could not be removed."""
        left: list[str] = []
        for link in reversed(self.root_links):
            if ip("link", "show", link, check=False):
                try:
                    ip("link", "del", link)
                except NetError as exc:
                    left.append(str(exc))
        self.root_links.clear()
        for netns in reversed(self.namespaces):
            try:
                ip("netns", "del", netns)
            except NetError as exc:
                left.append(str(exc))
        self.namespaces.clear()
        return left


def _free_front_octet(seed: int) -> int:
    """A third octet X such that the root namespace has no address or route in 10.231.X.0/24."""
    taken = ip("-4", "route", "show", "table", "all") + ip("-4", "addr", "show")
    used = []
    for word in taken.split():
        try:
            used.append(ipaddress.ip_network(word, strict=False))
        except ValueError:
            continue
    for step in range(250):
        octet = 1 + (seed + step) % 250
        candidate = ipaddress.ip_network(f"{FRONT_PREFIX}.{octet}.0/24")
        if not any(candidate.overlaps(net) for net in used):
            return octet
    raise NetError("no free 10.231.X.0/24 in the root namespace")
