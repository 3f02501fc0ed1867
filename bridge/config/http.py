"""The `http:` section of config.yaml: the web console and API of bridge/web/."""

import ipaddress

from pydantic import Field, SecretStr, model_validator

from bridge.config.base import StrictModel
from bridge.config.units import Duration, Size


class HttpSettings(StrictModel):
    """The web console and its REST API."""

    enabled: bool = Field(False, description="Serve the web console and the REST API")
    host: str = Field("127.0.0.1", description="Bind address; anything but loopback needs `token`")
    port: int = Field(8765, ge=0, le=65535)
    token: SecretStr | None = Field(
        None,
        description="Token every request must carry (bearer header, or the session cookie the login "
        "page gives for it; use !secret); required off loopback",
    )
    hosts: list[str] = Field(
        default_factory=list,
        description="Host names the console may be reached by besides loopback names and IP addresses "
        "(e.g. llm2mqtt.home.arpa); any other Host header is refused (DNS rebinding)",
    )
    origins: list[str] = Field(
        default_factory=list,
        description="Other origins (scheme://host:port) allowed to make changing requests; "
        "the console's own origin always is",
    )
    max_body: Size = Field(
        32 * 1024 * 1024, description="Largest request body; bigger uploads are refused with 413"
    )
    run_timeout: Duration = Field(
        30.0, description="How long POST /api/rules/{name}/run waits for the result before it answers 202"
    )
    session_max_age: Duration = Field(
        30 * 86400.0, description="How long a console login (session cookie) lasts"
    )

    @model_validator(mode="after")
    def _token_off_loopback(self) -> "HttpSettings":
        if self.enabled and not is_loopback(self.host) and self.token is None:
            raise ValueError(
                f"http.host {self.host!r} is reachable from the network: set http.token (from secrets.yaml)"
            )
        return self


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
