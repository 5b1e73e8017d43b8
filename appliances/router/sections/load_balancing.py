"""Load-balancing rules (HAProxy), as CloudStack's LB rules and their policies."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from appliances.common.errors import FieldError
from appliances.common.types import CidrV4, HostIPv4, Port, SafeId

if TYPE_CHECKING:
    from appliances.router.document import RouterDocument

ANY_V4 = "0.0.0.0/0"

#: A cookie name (RFC 6265 token characters that are also safe in haproxy.cfg).
CookieName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
#: An HTTP path for health checks: no spaces, quotes, backslashes or control characters
#: (it is written single-quoted into haproxy.cfg, where nothing else is special).
HttpPath = Annotated[str, StringConstraints(pattern=r"^/[A-Za-z0-9._~!$&()*+,;=:@%/?-]{0,255}$")]
#: PEM text (certificate chain or key); checked for shape here, by haproxy -c for sense.
_PEM_BLOCK = (
    r"-----BEGIN [A-Z0-9 ]+-----\r?\n[A-Za-z0-9+/=\r\n:,. -]+-----END [A-Z0-9 ]+-----\r?\n?"
)
Pem = Annotated[str, StringConstraints(max_length=64 * 1024, pattern=rf"^({_PEM_BLOCK})+$")]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LbMember(_Model):
    """A guest behind the rule. Weight 0 or enabled False takes it out of rotation
    (through the runtime API, no reload)."""

    id: SafeId
    ip: HostIPv4
    port: Port | None = Field(default=None, description="None: the rule's private_port.")
    weight: int = Field(default=1, ge=0, le=256)
    enabled: bool = True


class Stickiness(_Model):
    """One stickiness policy, named and parametrised as CloudStack's
    createLBStickinessPolicy methods are."""

    method: Literal["LbCookie", "AppCookie", "SourceBased"]
    cookie_name: CookieName | None = Field(
        default=None,
        description="LbCookie: the inserted cookie (default SRVID); "
        "AppCookie: the application's cookie to learn (required).",
    )
    table_size: int = Field(
        default=200_000,
        ge=1,
        le=10_000_000,
        description="SourceBased/AppCookie: stick table entries.",
    )
    expire_s: int = Field(
        default=1800,
        ge=1,
        le=86_400 * 30,
        description="SourceBased/AppCookie: entry lifetime (holdtime).",
    )
    length: int = Field(
        default=52,
        ge=1,
        le=1024,
        description="AppCookie: how many characters of the cookie to keep.",
    )

    @model_validator(mode="after")
    def _cookie_for_app(self) -> Self:
        if self.method == "AppCookie" and not self.cookie_name:
            raise ValueError("AppCookie needs cookie_name (the application's session cookie)")
        if self.method == "SourceBased" and self.cookie_name:
            raise ValueError("SourceBased sticks on the source address; cookie_name is not used")
        return self


class HealthCheck(_Model):
    """CloudStack's createLBHealthCheckPolicy. Without ping_path: a TCP connect check."""

    ping_path: HttpPath | None = None
    interval_s: int = Field(default=5, ge=1, le=600)
    response_timeout_s: int = Field(default=2, ge=1, le=60)
    healthy_threshold: int = Field(default=2, ge=1, le=100)
    unhealthy_threshold: int = Field(default=10, ge=1, le=100)

    @model_validator(mode="after")
    def _timeout_below_interval(self) -> Self:
        if self.response_timeout_s > self.interval_s:
            raise ValueError("response_timeout_s must not exceed interval_s")
        return self


class TlsTermination(_Model):
    """The rule's certificate (leaf first, then the chain) and private key."""

    certificate: Pem
    private_key: Pem


class LbRule(_Model):
    id: SafeId
    public_ip: HostIPv4
    public_port: Port
    private_port: Port
    algorithm: Literal["roundrobin", "leastconn", "source"] = "roundrobin"
    protocol: Literal["tcp", "http", "tcp-proxy"] = "tcp"
    source_cidrs: list[CidrV4] = Field(
        default_factory=lambda: [ANY_V4], min_length=1, max_length=256
    )
    members: list[LbMember] = Field(default_factory=list, max_length=1024)
    stickiness: Stickiness | None = None
    health_check: HealthCheck | None = None
    tls: TlsTermination | None = None

    @model_validator(mode="after")
    def _policies_fit_protocol(self) -> Self:
        if (
            self.stickiness
            and self.stickiness.method in ("LbCookie", "AppCookie")
            and self.protocol != "http"
        ):
            raise ValueError(
                f"{self.stickiness.method} stickiness needs protocol http "
                "(cookies are HTTP); use SourceBased for tcp"
            )
        if self.tls is not None and self.protocol == "tcp-proxy":
            raise ValueError("TLS termination works with protocol http or tcp, not tcp-proxy")
        return self


def verify(doc: RouterDocument) -> Iterator[FieldError]:
    """Cross-field rules: public IPs exist and are not taken, members are guests,
    no two listeners on one address and port, ids and member ids unique."""
    from appliances.router import verify as base

    publics = {p.ip for p in doc.public_ips}
    static = {s.public_ip for s in doc.static_nats}
    forwarded = (
        {
            (pf.public_ip, port)
            for pf in doc.port_forwards
            if pf.protocol == "tcp"
            for port in range(pf.public_range[0], pf.public_range[1] + 1)
        }
        if doc.load_balancers
        else set()
    )
    seen_ids: dict[str, int] = {}
    listeners: dict[tuple[str, int], int] = {}
    for n, rule in enumerate(doc.load_balancers):
        loc = f"load_balancers.{n}"
        if rule.id in seen_ids:
            yield FieldError(f"{loc}.id", f"the same id as load_balancers.{seen_ids[rule.id]}")
        seen_ids.setdefault(rule.id, n)
        if rule.public_ip not in publics:
            yield FieldError(f"{loc}.public_ip", f"{rule.public_ip} is not in public_ips")
        elif rule.public_ip in static:
            yield FieldError(f"{loc}.public_ip", f"{rule.public_ip} is used for static NAT")
        key = (rule.public_ip, rule.public_port)
        if key in listeners:
            yield FieldError(
                f"{loc}.public_port",
                f"{rule.public_ip}:{rule.public_port} is already load_balancers.{listeners[key]}",
            )
        listeners.setdefault(key, n)
        if key in forwarded:
            yield FieldError(
                f"{loc}.public_port",
                f"{rule.public_ip}:{rule.public_port} is already a port forward",
            )
        members: dict[str, int] = {}
        for k, member in enumerate(rule.members):
            if member.id in members:
                yield FieldError(
                    f"{loc}.members.{k}.id", f"the same id as members.{members[member.id]}"
                )
            members.setdefault(member.id, k)
            yield from base.in_guest(doc, member.ip, f"{loc}.members.{k}.ip")
