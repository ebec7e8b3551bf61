"""The VirtualServices moved with the primary one, and changes made by other writers.

Why: a rollout's state lives on one VirtualService (the primary); the others routing the same
app (``RolloutState.followers``) must show the same weights, and no single API call can write
several objects. So each step writes the primary (the state: the commit point), then each
follower in its own guarded JSON patch, with ``REF_ANNOTATION`` recording the rollout
(``startedAt``) and the weight written there. A follower whose pointer does not carry the
state's weight was left behind (a crash between two patches): the next actor repairs it before
anything else (``sync``). The weights canaryctl last wrote to each object (the state's on the
primary, the pointer's on a follower) tell whether another writer changed them since
(``drift``): an Argo CD self-heal, a ``kubectl apply`` of the file in git. canaryctl then
never writes over them: the controller pauses the rollout.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from canaryctl.errors import ConflictError, InputError, PreflightError, TargetNotFoundError
from canaryctl.logs import get_logger
from canaryctl.mesh import Destination, Target, TrafficRouter
from canaryctl.rollout import REF_ANNOTATION, RolloutState

log = get_logger("canaryctl.followers")


def destinations(state: RolloutState) -> tuple[Destination, Destination]:
    return (
        Destination(host=str(state.stable["host"]), subset=state.stable.get("subset")),
        Destination(host=str(state.canary["host"]), subset=state.canary.get("subset")),
    )


def target_of(
    router: TrafficRouter, state: RolloutState, vs: dict[str, Any], canary: str | None = None
) -> Target:
    """The rollout's split in ``vs``: by its recorded destinations, or ``canary``."""
    return router.resolve(
        vs,
        app=state.app,
        namespace=state.namespace,
        canary=canary,
        known=None if canary is not None else destinations(state),
        route_names=state.routes,
    )


def read_ref(vs: Mapping[str, Any]) -> dict[str, Any]:
    """The pointer of a follower ({} when absent or unreadable: it is then rewritten)."""
    text = ((vs.get("metadata") or {}).get("annotations") or {}).get(REF_ANNOTATION)
    try:
        ref = json.loads(text) if text else {}
    except ValueError:
        return {}
    return ref if isinstance(ref, dict) else {}


def _mine(state: RolloutState, ref: Mapping[str, Any]) -> bool:
    return bool(ref) and ref.get("startedAt") == state.started_at


def undone(state: RolloutState, vs: Mapping[str, Any]) -> bool:
    """A follower ``undo`` already sent back (pointer at weight 0) while the primary still says
    Promoted: ``undo`` was interrupted between the two patches. It is not left behind: the
    repair is to finish the undo (``undo.finish_interrupted``), never to re-promote it."""
    ref = read_ref(vs)
    return state.phase == "Promoted" and _mine(state, ref) and ref.get("weight") == 0


def lagging(state: RolloutState, listed: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Followers in ``listed`` (name -> object) whose pointer lacks the state's weight (an
    ``undone`` one is not lagging)."""
    out = []
    for name in state.followers:
        ref = read_ref(listed[name]) if name in listed else None
        if ref is None or undone(state, listed[name]):
            continue
        if not (_mine(state, ref) and ref.get("weight") == state.weight):
            out.append(name)
    return out


def _follower_target(router: TrafficRouter, state: RolloutState, vs: dict[str, Any]) -> Target:
    """The split of a follower: the rollout's pair, or (not written by this rollout yet, still
    splitting the previous release) the canary rewritten, with the same stable."""
    try:
        return target_of(router, state, vs)
    except PreflightError:
        if _mine(state, read_ref(vs)):
            raise
    side = state.canary.get("subset") or state.canary["host"]
    target = target_of(router, state, vs, canary=side)
    if target.stable.key(state.namespace) != destinations(state)[0].key(state.namespace):
        raise PreflightError(
            f"{router.kind} {target.vs_name} sends most of {state.app} to "
            f"{target.stable.label()}, not to the stable {destinations(state)[0].label()}"
        )
    return target


def follower_drift(router: TrafficRouter, state: RolloutState, vs: dict[str, Any]) -> str | None:
    """How another writer changed a follower this rollout wrote (None: it did not)."""
    ref = read_ref(vs)
    if not _mine(state, ref):
        return None
    try:
        return router.drift(vs, target_of(router, state, vs), int(ref.get("weight", -1)))
    except InputError as exc:
        return exc.message


def ref_value(state: RolloutState) -> str:
    """The pointer a follower carries (``REF_ANNOTATION``): the primary, the rollout, and the
    weight canaryctl wrote to the follower."""
    ref = {"virtualService": state.virtual_service, "startedAt": state.started_at}
    return json.dumps({**ref, "weight": state.weight}, sort_keys=True)


def sync(
    router: TrafficRouter,
    state: RolloutState,
    *,
    guard: bool,
    sleep: Callable[[float], None],
    attempts: int = 20,
) -> dict[str, dict[str, Any]]:
    """Write the state's weight (and pointer) to every follower that lacks it. ``guard``: leave
    a follower another writer changed alone (``drift`` reports it, the rollout pauses).
    Returns each follower as it now stands (read, or written), for ``drift``."""
    value = ref_value(state)
    seen: dict[str, dict[str, Any]] = {}
    for name in state.followers:
        for attempt in range(attempts):
            try:
                vs = seen[name] = router.read(state.namespace, name)
            except TargetNotFoundError:
                log.warning("follower.gone", vs=name)
                break
            if undone(state, vs) or (guard and follower_drift(router, state, vs) is not None):
                break
            try:
                target = _follower_target(router, state, vs)
            except InputError as exc:  # re-pointed by another writer: nothing safe to weight
                log.warning("follower.unmovable", vs=name, reason=exc.message)
                break
            ref = read_ref(vs)
            written = _mine(state, ref) and ref.get("weight") == state.weight
            if written and router.drift(vs, target, state.weight) is None:
                break
            try:
                seen[name] = router.write(
                    target, vs, canary_weight=state.weight, annotations={REF_ANNOTATION: value}
                )
            except ConflictError:
                sleep(min(0.05 * 2**attempt, 1.0))
                continue
            log.info("follower.written", vs=name, weight=state.weight)
            break
    return seen


def drift(
    router: TrafficRouter,
    state: RolloutState,
    vs: dict[str, Any],
    others: Mapping[str, dict[str, Any]],
) -> str | None:
    """How another writer changed the primary ``vs`` or a follower (``others``, as ``sync``
    left them) since canaryctl wrote them (a route gone or re-pointed counts too); None when
    nothing changed."""
    try:
        found = router.drift(vs, target_of(router, state, vs), state.weight)
    except InputError as exc:
        return exc.message
    for other in others.values():
        found = found or follower_drift(router, state, other)
    return found
