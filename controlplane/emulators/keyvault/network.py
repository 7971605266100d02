"""The vault's firewall (ARM `networkAcls`), as Key Vault applies it to data-plane calls."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

__all__ = ["NetworkRules"]


@dataclass(frozen=True)
class NetworkRules:
    """The vault's firewall (ARM networkAcls): defaultAction Allow or Deny, plus the IP rules
    (addresses or CIDR ranges) let through when it is Deny."""

    default_action: str = "Allow"
    ip_rules: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.default_action not in ("Allow", "Deny"):
            raise ValueError("default_action must be Allow or Deny")
        for rule in self.ip_rules:
            ipaddress.ip_network(rule, strict=False)  # ValueError for a bad rule

    def admits(self, address: str) -> bool:
        if self.default_action == "Allow":
            return True
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in ipaddress.ip_network(r, strict=False) for r in self.ip_rules)
