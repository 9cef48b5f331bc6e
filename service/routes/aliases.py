"""/v1/models/{name}/aliases: movable names for versions (`name@champion`), with guarded promotion.

Aliases belong to the lineage (owner, name), so only the name's owner (or an admin) sees or moves them; for
anyone else the name does not exist (404). Every move is kept in the lineage's alias history. A reference
`name@alias` is resolved in Redis on every request, so a move applies to the very next prediction.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Response

from engine import higher_is_better
from service.auth import Principal
from service.deps import AppState, Caller, State
from service.errors import ApiError, not_found, responses
from service.routes.evaluations import body_dataset, check_features, evaluate_now
from service.schemas import (
    AliasCreate,
    AliasList,
    AliasMovePublic,
    AliasPublic,
    ComparisonPublic,
    PromotionGuard,
)
from worker import AmbiguousModelNameError, ModelRecord
from worker.aliases import NAME_MAX_LENGTH, NAME_PATTERN, AliasConflictError, AliasRecord

router = APIRouter(prefix="/v1/models", tags=["aliases"])

AliasName = Annotated[str, Path(min_length=1, max_length=NAME_MAX_LENGTH, pattern=NAME_PATTERN)]
ModelName = Annotated[str, Path(min_length=1, max_length=NAME_MAX_LENGTH, pattern=NAME_PATTERN)]

_ERRORS = responses(401, 404, 409, 422, 503)
_BODY_ERRORS = responses(400, 401, 404, 409, 422, 503)


def _lineage(state: AppState, caller: Principal, name: str) -> tuple[str | None, dict[int, str]]:
    """(owner, version -> model id) of the caller's lineage `name`; 404 when it has no version."""
    try:
        found, owner = state.store.lineage_owner(name, caller.scope)
    except AmbiguousModelNameError as exc:
        raise ApiError(
            409, "ambiguous_model_name", f"name: {exc.name!r} is used by {exc.owners} owners; use a user key"
        ) from None
    versions = state.store.lineage_versions(owner, name) if found else {}
    if not versions or not caller.may_see(owner):
        raise not_found("model", name)
    return owner, versions


def _moves(history: list[dict[str, Any]], alias: str | None = None) -> list[AliasMovePublic]:
    return [AliasMovePublic.model_validate(move) for move in history if alias is None or move["alias"] == alias]


def _public(name: str, record: AliasRecord, history: list[dict[str, Any]]) -> AliasPublic:
    return AliasPublic(name=name, **record.to_dict(), history=_moves(history, record.alias))


@router.get("/{name}/aliases", summary="List a name's aliases", responses=_ERRORS)
def list_aliases(name: ModelName, state: State, caller: Caller) -> AliasList:
    """The name's aliases (each with its moves) and the history of every move: from, to, when, which key."""
    owner, _ = _lineage(state, caller, name)
    history = state.store.aliases.history(owner, name)
    items = [_public(name, record, history) for record in state.store.aliases.all(owner, name)]
    return AliasList(name=name, items=items, history=_moves(history))


def _metric_of(state: AppState, caller: Principal, record: ModelRecord, guard: PromotionGuard) -> tuple[float, str]:
    """(value of the guard's metric, evaluation id) of `record` on the guard's dataset: a stored evaluation
    of the same dataset content, else one computed now (and stored)."""
    dataset = body_dataset(state, caller, guard.dataset_id, "require.dataset_id")
    check_features(record, dataset, "require.dataset_id")
    entry = state.store.find_evaluation(record.id, dataset.id, dataset.sha256)
    if entry is None:
        entry = evaluate_now(state, caller, record, dataset, "require.dataset_id")
    return float(entry[guard.metric]), str(entry["id"])


def _guard(
    state: AppState, caller: Principal, guard: PromotionGuard, candidate: ModelRecord, holder: ModelRecord | None
) -> ComparisonPublic:
    """Evaluate both versions; 409 with both figures when the candidate is not better by `min_delta`."""
    value, evaluation_id = _metric_of(state, caller, candidate, guard)
    comparison = ComparisonPublic(
        metric=guard.metric,
        min_delta=guard.min_delta,
        dataset_id=guard.dataset_id,
        candidate={"version": candidate.version, "value": value, "evaluation_id": evaluation_id},
        current=None,
    )
    if holder is None:
        return comparison
    held, held_id = _metric_of(state, caller, holder, guard)
    comparison.current = {"version": holder.version, "value": held, "evaluation_id": held_id}
    # log_loss is better when lower: compare negated figures so one inequality serves every metric
    sign = 1.0 if higher_is_better(guard.metric) else -1.0
    if sign * value < sign * held + guard.min_delta:
        wanted = "at least" if sign > 0 else "at most"
        needed = held + sign * guard.min_delta
        raise ApiError(
            409,
            "promotion_refused",
            f"require: version {candidate.version} has {guard.metric} {value:.6g}, the current holder (version "
            f"{holder.version}) {held:.6g}; promotion needs {wanted} {needed:.6g} (min_delta {guard.min_delta:g})",
            details=[{"field": "require", "message": "not better than the current holder", **comparison.model_dump()}],
        )
    return comparison


@router.put("/{name}/aliases/{alias}", summary="Point an alias at a version", responses=_BODY_ERRORS)
def set_alias(name: ModelName, alias: AliasName, body: AliasCreate, state: State, caller: Caller) -> AliasPublic:
    """Point `alias` at `version` of the name; with `require`, only when that version's metric on the
    dataset is at least as good as the current holder's plus `min_delta` (else 409 with both figures)."""
    owner, versions = _lineage(state, caller, name)
    model_id = versions.get(body.version)
    candidate = None if model_id is None else state.store.get_model(model_id)
    if candidate is None:
        raise ApiError(
            404,
            "not_found",
            f"version: model {name!r} has no version {body.version}",
            details=[{"field": "version", "message": f"versions: {sorted(versions)}"}],
        )
    current = state.store.aliases.get(owner, name, alias)
    comparison = None
    if body.require is not None:
        holder = None
        if current is not None and current.version != body.version:
            holder = state.store.get_model(current.model_id)
        comparison = _guard(state, caller, body.require, candidate, holder)
    try:
        record = state.store.aliases.set(
            owner,
            name,
            alias,
            version=body.version,
            model_id=candidate.id,
            by=caller.owner,
            expected=None if current is None else current.version,
        )
    except AliasConflictError as exc:
        raise ApiError(409, "conflict", f"alias: {exc}; retry") from None
    history = state.store.aliases.history(owner, name)
    public = _public(name, record, history)
    public.comparison = comparison
    return public


@router.delete("/{name}/aliases/{alias}", status_code=204, summary="Remove an alias", responses=_ERRORS)
def delete_alias(name: ModelName, alias: AliasName, state: State, caller: Caller) -> Response:
    """Remove the alias (its history stays); 404 when the name has no such alias."""
    owner, _ = _lineage(state, caller, name)
    if not state.store.aliases.delete(owner, name, alias, by=caller.owner):
        raise not_found("alias", f"{name}@{alias}")
    return Response(status_code=204)
