"""The base of every configuration model."""

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """A configuration model in which an unknown key is an error, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)
