"""What the studio's requests may hold (pydantic models), and the generator inputs they mean."""
from __future__ import annotations

import math
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, Strict

from studio.errors import BadRequest
from studio.limits import MAX_IMAGE_JSON_BYTES, MAX_INTERPOLATION_STEPS, MAX_VALUES
from studio.models import OFFSET_RANGE, LoadedModel

# Numbers only: "1.5" (a string) or true is an error, not a silent conversion; NaN and
# infinity (which Python's JSON reader accepts) are refused by allow_inf_nan.
Number = Annotated[float, Strict(), Field(allow_inf_nan=False)]
Vector = Annotated[list[Number], Field(max_length=MAX_VALUES)]
ModelId = Annotated[str | None, Field(default=None, max_length=300)]


class State(BaseModel):
    """What the page edits: z, the extra inputs c, and attribute offsets with locks."""
    model_config = ConfigDict(extra="forbid")
    z: Vector
    c: Annotated[dict[str, Vector], Field(max_length=16)] = {}
    offsets: Annotated[dict[str, Number], Field(max_length=64)] = {}
    locks: Annotated[list[Annotated[str, Field(max_length=100)]], Field(max_length=64)] = []


class GenerateRequest(State):
    model: ModelId = None
    scale: Annotated[int, Field(ge=1, le=8, strict=True)] = 1


class RandomRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: ModelId = None
    seed: Annotated[int | None, Field(ge=0, lt=2 ** 32, strict=True)] = None


class InterpolateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: ModelId = None
    a: State
    b: State
    steps: Annotated[int, Field(ge=2, le=MAX_INTERPOLATION_STEPS, strict=True)] = 8


class ImageRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: ModelId = None
    image: Annotated[str, Field(max_length=MAX_IMAGE_JSON_BYTES)]
    mask: Annotated[str | None, Field(max_length=MAX_IMAGE_JSON_BYTES)] = None


class CompleteRequest(ImageRequest):
    """``method``: ``auto`` (the completion network trained on the generator's records when there
    is one, else the search), ``net`` or ``search`` (model/apps/completion_net.py METHODS)."""
    method: Literal["auto", "net", "search"] = "auto"


def _clip(values: np.ndarray, low: float, high: float) -> tuple[np.ndarray, int]:
    clipped = np.clip(values, low, high)
    return clipped, int((clipped != values).sum())


def resolve(model: LoadedModel, state: State) -> tuple[dict[str, np.ndarray], int]:
    """``({name: (1, size) float32}, clipped count)``: the generator inputs of ``state``."""
    card = model.card
    z = np.asarray(state.z, np.float32)
    if z.shape != (card.z.size,):
        raise BadRequest(f"z has {len(state.z)} values; model {model.id!r} takes {card.z.size}")
    z, clipped = _clip(z, *card.z.range)
    unknown = sorted(set(state.c) - {s.name for s in card.extra_inputs})
    if unknown:
        raise BadRequest(f"unknown input(s) {unknown} in c; model {model.id!r} takes "
                         f"{[s.name for s in card.extra_inputs] or 'z only'}")
    inputs = {}
    for spec in card.extra_inputs:
        if spec.name in state.c:
            value = np.asarray(state.c[spec.name], np.float32)
            if value.shape != (spec.size,):
                raise BadRequest(f"c.{spec.name} has {len(state.c[spec.name])} values; it takes {spec.size}")
        else:  # a neutral default: the middle of the range, or the first class
            value = (np.eye(spec.size, dtype=np.float32)[0] if spec.kind == "onehot"
                     else np.full(spec.size, sum(spec.range) / 2, np.float32))
        low, high = spec.range if spec.range is not None else (0.0, 1.0)
        value, n = _clip(value, low, high)
        clipped += n
        inputs[spec.name] = value[None]
    for what, names in (("offsets", list(state.offsets)), ("locks", state.locks)):
        unknown = sorted(set(names) - set(model.names))
        if unknown:
            raise BadRequest(f"unknown direction(s) {unknown} in {what}; model {model.id!r} has "
                             f"{model.names or 'no attribute directions'}")
    offsets = {k: float(np.clip(v, *OFFSET_RANGE)) for k, v in state.offsets.items()}
    z = np.clip(model.apply_directions(z, offsets, state.locks), *card.z.range)
    return {"z": z[None].astype(np.float32), **inputs}, clipped


def state_of(inputs: dict[str, np.ndarray], i: int = 0) -> dict:
    """Row ``i`` of generator inputs as the page's ``{"z": [...], "c": {name: [...]}}``."""
    return {"z": _floats(inputs["z"][i]), "c": {k: _floats(v[i]) for k, v in inputs.items() if k != "z"}}


def _floats(values) -> list[float]:
    """float32 values as the shortest decimals that read back as the same float32, so a
    state the page sends back draws exactly the image it came with."""
    return [float(str(v)) for v in np.asarray(values, np.float32).ravel()]


def number(x) -> float | None:
    """A JSON number, None for NaN or infinity."""
    x = float(x)
    return None if math.isnan(x) or math.isinf(x) else round(x, 4)
