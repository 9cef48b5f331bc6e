"""/v2: the Open Inference Protocol (KServe v2, REST), so clients and gateways written for KServe, Triton or
MLServer can call Backprop's models unchanged.

A model is addressed by name (its latest version, as on /v1, or a model id) and optionally a version number
of its lineage; API keys and ownership are those of /v1. Errors follow the protocol: `{"error": "..."}`
with 400 for a bad request (where /v1 says 422) and 404 for an unknown model or version.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated, Any

import numpy as np
import redis
from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.auth import Principal
from service.deps import AppState, Caller, State, find_model
from service.errors import ApiError, field_path, limit_exceeded, not_found
from service.routes.models import _loaded, _probabilities
from service.schemas import FiniteFloat
from worker import ModelRecord

logger = logging.getLogger(__name__)

PLATFORM = "backprop_numpy"
INPUT = "input"
OUTPUTS = ("label", "probabilities")
INPUT_DATATYPES = ("FP32", "FP64")

_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _error(status_code: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status_code, headers=headers)


def _validation_message(exc: RequestValidationError) -> str:
    errors = exc.errors()
    parts = [f"{field_path(tuple(e.get('loc', ())))}: {e.get('msg', 'invalid value')}" for e in errors[:3]]
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    return "; ".join(parts) + more


class ProtocolRoute(APIRoute):
    """Errors of these routes in the protocol's shape `{"error": "..."}`, a bad request being 400 (not 422);
    the tensors' binary extension is refused with a message saying to send JSON."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            if "inference-header-content-length" in request.headers:
                return _error(400, "binary tensor data is not supported: send the tensors as JSON `data`")
            try:
                return await handler(request)
            except ApiError as exc:
                return _error(400 if exc.status_code == 422 else exc.status_code, exc.message, exc.headers)
            except RequestValidationError as exc:
                return _error(400, _validation_message(exc))
            except StarletteHTTPException as exc:
                return _error(exc.status_code, str(exc.detail), exc.headers)
            except redis.RedisError as exc:
                logger.warning("redis unavailable during %s %s: %s", request.method, request.url.path, exc)
                return _error(503, "the model store (Redis) is unavailable; retry shortly", {"Retry-After": "5"})

        return route


# Clients of the protocol (Triton's among them) send JSON bodies without a Content-Type header.
router = APIRouter(prefix="/v2", tags=["v2 inference"], route_class=ProtocolRoute, strict_content_type=False)


# --- the protocol's bodies -------------------------------------------------------------------------


class RequestInput(BaseModel):
    """One input tensor; `data` flat in row-major order or nested by rows."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=256)
    shape: list[Annotated[int, Field(ge=0)]] = Field(max_length=8)
    datatype: str = Field(max_length=16)
    parameters: dict[str, Any] | None = None
    data: list[FiniteFloat | list[FiniteFloat]]


class RequestOutput(BaseModel):
    """An output the caller wants (both when `outputs` is absent)."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=256)
    parameters: dict[str, Any] | None = None


class InferenceRequest(BaseModel):
    """An inference request: one input tensor `input` of shape [n, n_features]."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"id": "1", "inputs": [{"name": "input", "shape": [1, 2], "datatype": "FP32", "data": [0.5, 1.0]}]}
            ]
        },
    )
    id: str | None = Field(default=None, max_length=256)
    parameters: dict[str, Any] | None = None
    inputs: list[RequestInput] = Field(min_length=1, max_length=1)
    outputs: list[RequestOutput] | None = Field(default=None, max_length=len(OUTPUTS))


class ProtocolError(BaseModel):
    error: str


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int] = Field(description="-1 for a dimension of any size.")


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class ResponseOutput(BaseModel):
    name: str
    datatype: str = Field(description="`BYTES` or `INT64` labels (as the classes are), `FP32` probabilities.")
    shape: list[int]
    data: list[int | float | str] = Field(description="Flat, in row-major order.")


class InferenceResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())
    model_name: str
    model_version: str
    id: str | None = Field(default=None, description="The request's `id`, when it had one.")
    outputs: list[ResponseOutput]


class ServerLive(BaseModel):
    live: bool


class ServerReady(BaseModel):
    ready: bool


class ModelReady(BaseModel):
    name: str
    ready: bool


_DESCRIPTIONS = {
    400: "Bad request; the message names the field (`inputs[0].shape`, `outputs[1].name`, ...).",
    401: "Missing or unknown API key (when keys are configured).",
    404: "No such model or version, or it belongs to another API key.",
    409: "An admin's model name is used by several owners (give the model id).",
    503: "Redis is unavailable.",
}


def _responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ProtocolError, "description": _DESCRIPTIONS[code]} for code in codes}


MODEL_ERRORS = _responses(401, 404, 409, 503)


# --- models by name and version --------------------------------------------------------------------


def resolve_model(state: AppState, caller: Principal, name: str, model_version: str | None) -> ModelRecord:
    """The model `name` (a name means its latest version, or a model id) or version `model_version` of its
    lineage, when the caller may see it; else 404 (409 when an admin's name is used by several owners)."""
    record = find_model(state, caller, name)
    if model_version is None or model_version == str(record.version):
        return record
    model_id = state.store.lineage_versions(record.owner, record.name).get(
        int(model_version) if model_version.isdecimal() else -1
    )
    found = None if model_id is None else state.records.resolve(model_id, owner=caller.scope)
    if found is None:
        raise not_found("model version", f"{name}/{model_version}")
    return found


def _label_datatype(record: ModelRecord) -> str:
    return "BYTES" if any(isinstance(label, str) for label in record.classes) else "INT64"


def _metadata(state: AppState, record: ModelRecord) -> dict[str, Any]:
    versions = state.store.lineage_versions(record.owner, record.name)
    return {
        "name": record.name,
        "versions": [str(number) for number in versions],
        "platform": PLATFORM,
        "inputs": [{"name": INPUT, "datatype": "FP32", "shape": [-1, record.n_features]}],
        "outputs": [
            {"name": "label", "datatype": _label_datatype(record), "shape": [-1]},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, len(record.classes)]},
        ],
    }


def _ready(state: AppState, record: ModelRecord) -> dict[str, Any]:
    _loaded(state, record)  # a ready model is loaded: the first inference does not pay for it
    return {"name": record.name, "ready": True}


# --- inference -------------------------------------------------------------------------------------


def _bad(message: str) -> ApiError:
    return ApiError(400, "bad_request", message)


def _rows(tensor: RequestInput, rows: int, n_features: int) -> np.ndarray:
    """The tensor's data as float64 rows (rows, n_features), checked against its shape."""
    data = tensor.data
    nested = [isinstance(value, list) for value in data]
    if any(nested):
        if not all(nested):
            raise _bad("inputs[0].data: mixes numbers and lists; send it flat (row-major) or as rows")
        if len(data) != rows:
            raise _bad(f"inputs[0].data: {len(data)} rows, the shape says {rows}")
        for index, row in enumerate(data):
            if isinstance(row, list) and len(row) != n_features:
                raise _bad(f"inputs[0].data[{index}]: {len(row)} values, the model expects {n_features}")
    elif len(data) != rows * n_features:
        raise _bad(f"inputs[0].data: {len(data)} values, shape {tensor.shape} needs {rows * n_features}")
    X = np.asarray(data, dtype=np.float64).reshape(rows, n_features)
    if tensor.datatype == "FP32":
        too_large = np.abs(X) > _FLOAT32_MAX
        if too_large.any():
            row, column = (int(i) for i in np.argwhere(too_large)[0])
            raise _bad(f"inputs[0].data: row {row}, column {column} is outside the FP32 range")
        X = X.astype(np.float32).astype(np.float64)
    return X


def _features(state: AppState, body: InferenceRequest, n_features: int) -> np.ndarray:
    """The request's one input tensor as float64 rows, or 400 naming what is wrong."""
    tensor = body.inputs[0]
    if tensor.name != INPUT:
        raise _bad(f"inputs[0].name: unknown input {tensor.name!r}; the model's input is {INPUT!r}")
    if tensor.datatype not in INPUT_DATATYPES:
        raise _bad(f"inputs[0].datatype: {tensor.datatype!r} is not supported; send FP32 or FP64")
    if len(tensor.shape) != 2 or tensor.shape[1] != n_features or tensor.shape[0] < 1:
        raise _bad(f"inputs[0].shape: {tensor.shape}, the model expects [n, {n_features}] with n >= 1")
    maximum = state.settings.max_predict_rows
    if tensor.shape[0] > maximum:
        raise limit_exceeded(400, "inputs[0].shape[0]", "max_predict_rows", tensor.shape[0], maximum)
    return _rows(tensor, tensor.shape[0], n_features)


def _requested_outputs(body: InferenceRequest) -> list[str]:
    if not body.outputs:  # absent or empty: every output
        return list(OUTPUTS)
    for index, output in enumerate(body.outputs):
        if output.name not in OUTPUTS:
            raise _bad(f"outputs[{index}].name: unknown output {output.name!r}; this model has {list(OUTPUTS)}")
    return [output.name for output in body.outputs]


def _infer(state: AppState, record: ModelRecord, body: InferenceRequest) -> JSONResponse:
    started = time.perf_counter()
    X = _features(state, body, record.n_features)
    names = _requested_outputs(body)
    model, _ = _loaded(state, record)
    try:
        probabilities = _probabilities(model, X)
    except (ValueError, TypeError, FloatingPointError) as exc:
        raise _bad(f"inputs[0].data: {exc}") from None
    if not np.all(np.isfinite(probabilities)):
        raise _bad("inputs[0].data: values too large: the probabilities are not finite")
    classes = [label if isinstance(label, str) else int(label) for label in model.classes]
    tensors = {
        "label": {
            "name": "label",
            "datatype": _label_datatype(record),
            "shape": [len(X)],
            "data": [classes[i] for i in np.argmax(probabilities, axis=1).tolist()],
        },
        "probabilities": {
            "name": "probabilities",
            "datatype": "FP32",
            "shape": list(probabilities.shape),
            "data": probabilities.astype(np.float32).ravel().tolist(),
        },
    }
    state.metrics.prediction_requests.inc()
    state.metrics.prediction_latency.observe(time.perf_counter() - started)
    response: dict[str, Any] = {"model_name": record.name, "model_version": str(record.version)}
    if body.id is not None:
        response["id"] = body.id
    response["outputs"] = [tensors[name] for name in names]
    return JSONResponse(response)


# --- routes ----------------------------------------------------------------------------------------


@router.get("/health/live", summary="Server liveness (v2)", response_model=ServerLive)
def read_server_live() -> dict[str, bool]:
    """200 while the process is up (open, like /healthz)."""
    return {"live": True}


@router.get(
    "/health/ready",
    summary="Server readiness (v2)",
    response_model=ServerReady,
    responses={503: {"model": ServerReady, "description": "Redis does not answer."}},
)
def read_server_ready(state: State) -> JSONResponse:
    """200 when the model store (Redis) answers within 1 s, else 503 (open, like /readyz)."""
    try:
        ready = bool(state.probe.ping())
    except redis.RedisError as exc:
        logger.warning("v2 readiness: Redis error %s", type(exc).__name__)
        ready = False
    return JSONResponse({"ready": ready}, status_code=200 if ready else 503)


@router.get("", summary="Server metadata (v2)", response_model=ServerMetadata, responses=_responses(401, 503))
def read_server_metadata(caller: Caller) -> dict[str, Any]:
    """Name, version and protocol extensions of this server."""
    try:
        server_version = version("backprop")
    except PackageNotFoundError:
        server_version = "unknown"
    return {"name": "backprop", "version": server_version, "extensions": []}


@router.get("/models/{name}", summary="Model metadata (v2)", response_model=ModelMetadata, responses=MODEL_ERRORS)
def read_model_metadata(name: str, state: State, caller: Caller) -> dict[str, Any]:
    """The model's versions, platform, input and outputs; `name` means its latest version."""
    return _metadata(state, resolve_model(state, caller, name, None))


@router.get(
    "/models/{name}/versions/{model_version}",
    summary="Model version metadata (v2)",
    response_model=ModelMetadata,
    responses=MODEL_ERRORS,
)
def read_model_version_metadata(name: str, model_version: str, state: State, caller: Caller) -> dict[str, Any]:
    """Metadata of one version of the model."""
    return _metadata(state, resolve_model(state, caller, name, model_version))


@router.get("/models/{name}/ready", summary="Model readiness (v2)", response_model=ModelReady, responses=MODEL_ERRORS)
def read_model_ready(name: str, state: State, caller: Caller) -> dict[str, Any]:
    """200 when the model's latest version is loaded and ready to infer; 404 for an unknown model."""
    return _ready(state, resolve_model(state, caller, name, None))


@router.get(
    "/models/{name}/versions/{model_version}/ready",
    summary="Model version readiness (v2)",
    response_model=ModelReady,
    responses=MODEL_ERRORS,
)
def read_model_version_ready(name: str, model_version: str, state: State, caller: Caller) -> dict[str, Any]:
    """200 when this version is loaded and ready to infer."""
    return _ready(state, resolve_model(state, caller, name, model_version))


@router.post(
    "/models/{name}/infer",
    summary="Inference (v2)",
    response_model=InferenceResponse,
    responses=_responses(400, 401, 404, 409, 503),
)
def infer(name: str, body: InferenceRequest, state: State, caller: Caller) -> JSONResponse:
    """Labels (`label`: BYTES or INT64, [n]) and probabilities (`probabilities`: FP32, [n, k], columns in the
    order of the model's classes) for the rows of the tensor `input` (FP32 or FP64, [n, n_features])."""
    return _infer(state, resolve_model(state, caller, name, None), body)


@router.post(
    "/models/{name}/versions/{model_version}/infer",
    summary="Inference with a version (v2)",
    response_model=InferenceResponse,
    responses=_responses(400, 401, 404, 409, 503),
)
def infer_version(
    name: str, model_version: str, body: InferenceRequest, state: State, caller: Caller
) -> JSONResponse:
    """Inference with one version of the model."""
    return _infer(state, resolve_model(state, caller, name, model_version), body)
