"""Request and response bodies of the service (pydantic): every field typed, bounded and described.

A request that breaks a rule gets a 422 naming the field (``body.k: Input should be less than or equal to
1000``), never a 500.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_K = 1000
ItemId = Field(min_length=1, max_length=200, description="external item id, as in the catalogue")


class Recommendation(BaseModel):
    rank: int
    item_id: str
    title: str
    score: float
    because_item_id: str = Field("", description="the history item most similar to this one ('' = none)")
    because: str = Field("", description="its title: 'because you liked ...'")
    because_similarity: float | None = None


class Recommendations(BaseModel):
    user_id: str | None = None
    stage: str = Field(description="what ranked the list (first stage, reranking)")
    items: list[Recommendation]


class RecommendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: str = Field(min_length=1, max_length=200, description="external user id (known, or any id that "
                         "has posted interactions)")
    k: int = Field(10, ge=1, le=MAX_K)
    exclude: list[str] = Field(default_factory=list, max_length=10_000, description="item ids never returned")
    filters: dict[str, Any] | None = Field(None, description='catalogue conditions, e.g. {"genres": "Comedy", '
                                           '"year": {"min": 1990, "max": 1999}}')
    rerank: bool = Field(True, description="false: the served first stage only, without the cross-encoder")


class AnonymousRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: list[str] = Field(default_factory=list, max_length=200, description="liked item ids, oldest first")
    text: str = Field("", max_length=2000, description="their taste in words")
    k: int = Field(10, ge=1, le=MAX_K)
    filters: dict[str, Any] | None = None


class ItemIn(BaseModel):
    """An item from its description alone; other text fields (``genres``, ``tags``, ...) are kept too."""

    model_config = ConfigDict(extra="allow")
    item_id: str = ItemId
    title: str = Field(min_length=1, max_length=500)
    description: str = Field("", max_length=20_000)

    @field_validator("title")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("title is blank")
        return v

    def row(self) -> dict[str, str]:
        extra = {k: v for k, v in (self.model_extra or {}).items()}
        bad = [k for k, v in extra.items() if not isinstance(v, (str, int, float))]
        if bad:
            raise ValueError(f"items: fields {bad} must be text or numbers")
        return {"item_id": self.item_id.strip(), "title": self.title, "description": self.description,
                **{k: str(v) for k, v in extra.items()}}


class AddItemsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: list[ItemIn] = Field(min_length=1, max_length=1000)
    upsert: bool = Field(False, description="replace the text and vector of item ids already in the catalogue")


class AddItemsResponse(BaseModel):
    added: list[str]
    live_items: int


class RetireRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: list[str] = Field(min_length=1, max_length=10_000)


class Interaction(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: str = Field(min_length=1, max_length=200)
    item_id: str = ItemId
    timestamp: int | None = Field(None, ge=0, description="seconds since the epoch (default: now)")
    rating: float | None = Field(None, ge=-1000, le=1000)


class InteractionsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    events: list[Interaction] = Field(min_length=1, max_length=10_000)


class ItemOut(BaseModel):
    item_id: str
    title: str
    score: float | None = None


class ItemList(BaseModel):
    items: list[ItemOut]


class UserOut(BaseModel):
    user_id: str
    history: list[ItemOut] = Field(description="what the service knows the user did, oldest first")
