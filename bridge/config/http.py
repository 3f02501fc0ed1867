"""The `http:` section of config.yaml: the web server of bridge/web/."""

import ipaddress

from pydantic import Field, SecretStr, model_validator

from bridge.config.base import StrictModel


class HttpSettings(StrictModel):
    """The REST API (and, later, the web page)."""

    enabled: bool = Field(False, description="Serve the REST API")
    host: str = Field("127.0.0.1", description="Bind address; anything but loopback needs `token`")
    port: int = Field(8765, ge=0, le=65535)
    token: SecretStr | None = Field(
        None, description="Bearer token every request must carry (use !secret); required off loopback"
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
