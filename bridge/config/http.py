"""The `http:` section of config.yaml: the web server of bridge/web/."""

import ipaddress

from pydantic import Field, SecretStr, field_validator, model_validator

from bridge.config.base import StrictModel

MIN_TOKEN = 16


class HttpSettings(StrictModel):
    """The REST API (and, later, the web page)."""

    enabled: bool = Field(False, description="Serve the REST API")
    host: str = Field("127.0.0.1", description="Bind address; anything but loopback needs `token`")
    port: int = Field(8765, ge=0, le=65535)
    token: SecretStr | None = Field(
        None, description="Bearer token every request must carry (use !secret); required off loopback"
    )

    @field_validator("token")
    @classmethod
    def _long_enough(cls, token: SecretStr | None) -> SecretStr | None:
        if token is not None and len(token.get_secret_value()) < MIN_TOKEN:
            raise ValueError(
                f"the token must be at least {MIN_TOKEN} characters (an empty or short token is "
                "no protection); make one with `openssl rand -hex 16` and keep it in secrets.yaml"
            )
        return token

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
