"""/metrics: Prometheus text exposition of this API process and of the shared state in Redis."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from service.auth import authenticate, require_admin
from service.deps import State
from service.errors import responses
from service.metrics import CONTENT_TYPE

router = APIRouter(tags=["metrics"])


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={
        200: {
            "content": {CONTENT_TYPE.split(";")[0]: {"schema": {"type": "string"}}},
            "description": "Metrics.",
        },
        **responses(401, 403),
    },
)
def metrics(request: Request, state: State) -> Response:
    """Jobs by status, queue depth, workers alive, epochs, samples/s, predictions, cache, HTTP statuses.

    Public when `metrics_public` is set; otherwise it needs an admin API key.
    """
    if not state.settings.metrics_public:
        require_admin(authenticate(request, state.keyring))
    return Response(state.metrics.render(), media_type=CONTENT_TYPE)
