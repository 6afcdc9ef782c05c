"""Clients and managers as the CRM sends them, and how they become store rows.

Phones arrive in any form (`8 (916) 123-45-67`, `+7 916 123 45 67`); they are normalized
with the same `callrouter.phone.normalize` the router uses, in the region given as
validation context (`ClientIn.model_validate(data, context={"region": "RU"})`, default
`DEFAULT_REGION`). A phone that does not normalize is a validation error naming it, so
nothing is stored that routing could never match.
"""
from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationInfo, field_validator

from callrouter.phone import DEFAULT_REGION, normalize
from callrouter.store.clients import Client

MAX_PHONES = 50  # per client
Text = Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)]
Extension = Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^[0-9A-Za-z*#+_-]{1,32}$")]


class ClientIn(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
    name: Text = ""
    phones: tuple[str, ...] = Field(default=(), max_length=MAX_PHONES,
                                    description="phone numbers in any form; stored as E.164")
    owner_extension: Extension | None = None
    monthly_turnover: float | None = Field(default=None, ge=0)
    tier: Text | None = None
    problem: bool = False
    blocked: bool = False

    @field_validator("phones", mode="after")
    @classmethod
    def _normalized(cls, phones: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        region = (info.context or {}).get("region", DEFAULT_REGION)
        out = []
        for raw in phones:
            e164 = normalize(raw, region)
            if e164 is None:
                raise ValueError(f"phone {raw!r} is not a dialable number (region {region})")
            out.append(e164)
        return tuple(sorted(set(out)))

    def to_client(self) -> Client:
        return Client(id=self.id, name=self.name, phones=self.phones, owner_extension=self.owner_extension,
                      monthly_turnover=self.monthly_turnover, tier=self.tier, problem=self.problem,
                      blocked=self.blocked)


class ManagerIn(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    extension: Extension
    name: Text | None = None
    devices: tuple[Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^[^/\s]+/\S+$",
                                                    max_length=128)], ...] = ()
