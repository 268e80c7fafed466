"""The ``service`` config section: where ``osprey serve`` listens and whom it believes.

Kept free of the web framework, so loading a configuration never imports FastAPI.
"""

from __future__ import annotations

import ipaddress

from pydantic import BaseModel, ConfigDict, Field, field_validator

from osprey_core.service.roles import Role, implied_roles

__all__ = ["Role", "ServiceSettings", "implied_roles", "is_loopback"]


LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ServiceSettings(BaseModel):
    """The HTTP service (osprey serve): address, limits, identity from a trusted proxy."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field("127.0.0.1", min_length=1, description="Address to listen on; loopback "
                      "by default, anything else is a deliberate choice.")
    port: int = Field(8750, ge=1, le=65535, description="TCP port to listen on.")
    public_url: str | None = Field(None, description="How people reach the console (links "
                                   "in chat pauses); default http://host:port.")
    max_body_bytes: int = Field(1_048_576, ge=1024, le=1_073_741_824,
                                description="Larger request bodies are refused (413).")
    separation_of_duties: bool = Field(True, description="Who asked for a write cannot "
                                       "approve it.")
    trusted_proxies: list[str] = Field(default_factory=list, description="Addresses or "
                                       "networks whose identity header is believed, e.g. "
                                       "[127.0.0.1]; from any other peer it is ignored.")
    proxy_user_header: str = Field("X-Remote-User", min_length=1, description="Header a "
                                   "trusted proxy names the signed-in user in.")
    proxy_roles: dict[str, list[Role]] = Field(default_factory=dict, description="Roles of "
                                               "users the proxy vouches for, by user name.")
    proxy_default_roles: list[Role] = Field(default_factory=lambda: [Role.VIEWER],
                                            description="Roles of proxy users not listed in "
                                            "proxy_roles.")

    @field_validator("trusted_proxies")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address or network "
                                 "(e.g. 127.0.0.1 or 10.0.0.0/24)") from None
        return value

    def url(self) -> str:
        """Where people reach the service: ``public_url``, else ``http://host:port``."""
        if self.public_url:
            return self.public_url.rstrip("/")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def trusts(self, peer: str | None) -> bool:
        """Whether ``peer`` (a client address) is a configured reverse proxy."""
        if not peer or not self.trusted_proxies:
            return False
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return False
        return any(address in ipaddress.ip_network(item, strict=False)
                   for item in self.trusted_proxies)
