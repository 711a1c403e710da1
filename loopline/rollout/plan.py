"""Safe rollout of a model version: the plan and the traffic split.

A :class:`RolloutPlan` says how a *candidate* version runs next to the
*champion*: in ``shadow`` mode the candidate scores a sampled share of
requests off the response path (the champion answers); in ``canary`` mode a
share of entities is answered by the candidate. The split is a stable hash of
(plan id, entity), so an entity keeps its arm for the life of a plan and a new
plan reshuffles. :class:`~loopline.rollout.policy.RolloutPolicy`
watches per-arm calls and labels and decides when to promote or abort.
Everything here is pure: no I/O, no clock reads except where a caller passes
none.

>>> plan = RolloutPlan.start("fraud", candidate="3", champion="2", mode="canary",
...                          canary_share=0.25, plan_id="p1", created_ms=0)
>>> assign_arm(plan, "card-17") == assign_arm(plan, "card-17")
True
>>> assign_arm(plan, "card-17", override="candidate")
'candidate'
>>> RolloutPlan.from_json(plan.to_json()) == plan
True
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

from loopline.contracts.errors import ConfigError, InvalidRequestError, SchemaError

CHAMPION = "champion"
CANDIDATE = "candidate"
ARMS = (CHAMPION, CANDIDATE)
MODES = ("shadow", "canary")
STATES = ("running", "promoted", "aborted")

_HASH_SCALE = float(2**64)


def _unit_hash(*parts: str) -> float:
    """A stable number in [0, 1) for the parts (same on every host and run)."""
    digest = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _HASH_SCALE


@dataclass(frozen=True)
class RolloutPlan:
    """One rollout of ``candidate_version`` against ``champion_version`` of ``model``.

    ``canary_share`` is the share of entities the candidate answers (canary
    mode); ``shadow_share`` the share of requests the candidate also scores
    off the response path (shadow mode).
    """

    model: str
    candidate_version: str
    champion_version: str
    mode: str = "shadow"
    canary_share: float = 0.0
    shadow_share: float = 1.0
    plan_id: str = ""
    created_ms: int = 0
    state: str = "running"
    reason: str = ""
    updated_ms: int = 0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"rollout mode must be one of {MODES}, not {self.mode!r}")
        if self.state not in STATES:
            raise ConfigError(f"rollout state must be one of {STATES}, not {self.state!r}")
        for name in ("canary_share", "shadow_share"):
            share = getattr(self, name)
            if not (isinstance(share, int | float) and 0.0 <= share <= 1.0):
                raise ConfigError(f"rollout {name} must be within [0, 1], not {share!r}")
        if not self.model or not self.candidate_version or not self.plan_id:
            raise ConfigError("a rollout plan needs a model, a candidate version and a plan id")

    @staticmethod
    def start(
        model: str,
        *,
        candidate: str,
        champion: str,
        mode: str,
        canary_share: float = 0.0,
        shadow_share: float = 1.0,
        plan_id: str = "",
        created_ms: int | None = None,
    ) -> RolloutPlan:
        """A new running plan (a fresh random plan id unless given)."""
        now = int(time.time() * 1000) if created_ms is None else created_ms
        return RolloutPlan(
            model=model,
            candidate_version=candidate,
            champion_version=champion,
            mode=mode,
            canary_share=canary_share,
            shadow_share=shadow_share,
            plan_id=plan_id or uuid.uuid4().hex[:12],
            created_ms=now,
            updated_ms=now,
        )

    @property
    def running(self) -> bool:
        return self.state == "running"

    def finished(self, state: str, reason: str, now_ms: int | None = None) -> RolloutPlan:
        """This plan ended as ``state`` ("promoted" | "aborted").

        >>> p = RolloutPlan("m", "2", "1", plan_id="x")
        >>> p.finished("aborted", "errors").state, p.state
        ('aborted', 'running')
        """
        if state not in ("promoted", "aborted"):
            raise ConfigError(f"a rollout ends promoted or aborted, not {state!r}")
        now = int(time.time() * 1000) if now_ms is None else now_ms
        return dataclasses.replace(self, state=state, reason=reason, updated_ms=now)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(data: dict[str, Any]) -> RolloutPlan:
        """Build from a decoded record; unknown keys are ignored (newer writers)."""
        if not isinstance(data, dict):
            raise SchemaError("a rollout plan must be a JSON object", "plan")
        known = {f.name for f in dataclasses.fields(RolloutPlan)}
        try:
            return RolloutPlan(**{k: v for k, v in data.items() if k in known})
        except TypeError as e:
            raise SchemaError(f"rollout plan: {e}", "plan") from e
        except ConfigError as e:
            raise SchemaError(f"rollout plan: {e}", "plan") from e

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @staticmethod
    def from_json(text: str) -> RolloutPlan:
        try:
            data = json.loads(text)
        except ValueError as e:
            raise SchemaError(f"rollout plan is not JSON: {e}", "plan") from e
        return RolloutPlan.from_dict(data)


def assign_arm(plan: RolloutPlan | None, entity_id: str, override: str = "") -> str:
    """Which arm answers a request for ``entity_id``: "champion" or "candidate".

    Canary mode: the candidate answers when the stable hash of (plan id,
    entity) falls below the canary share, so an entity is sticky for a plan.
    Shadow mode and finished (or no) plans: the champion always answers. A
    per-request ``override`` ("champion" | "candidate") wins while the plan runs.

    >>> p = RolloutPlan("m", "2", "1", mode="canary", canary_share=1.0, plan_id="a")
    >>> assign_arm(p, "e"), assign_arm(p, "e", override="champion"), assign_arm(None, "e")
    ('candidate', 'champion', 'champion')
    """
    if override and override not in ARMS:
        raise InvalidRequestError(f"arm override must be one of {ARMS}, not {override!r}")
    if plan is None or not plan.running:
        return CHAMPION
    if override:
        return override
    if plan.mode != "canary":
        return CHAMPION
    return CANDIDATE if _unit_hash(plan.plan_id, entity_id) < plan.canary_share else CHAMPION


def shadow_sampled(plan: RolloutPlan | None, request_id: str) -> bool:
    """Whether the candidate also scores this request off the response path.

    >>> p = RolloutPlan("m", "2", "1", mode="shadow", shadow_share=1.0, plan_id="a")
    >>> shadow_sampled(p, "r1"), shadow_sampled(p.finished("aborted", "x"), "r1")
    (True, False)
    """
    if plan is None or not plan.running or plan.mode != "shadow":
        return False
    return _unit_hash(plan.plan_id, "shadow", request_id) < plan.shadow_share


def shadow_request_id(request_id: str) -> str:
    """The request id a shadow score is logged under.

    The label join drops a second prediction log with the same request id as a
    duplicate, and joins predictions to outcomes by event id: so the shadow
    log takes this id, keeps the request's event id (or, when it has none, the
    original request id as its ``event_id``) and ``arm="candidate"``.

    >>> shadow_request_id("r-1")
    'r-1/shadow'
    """
    return f"{request_id}/shadow"


def plan_arm(plan: RolloutPlan, model_version: str, event_time_ms: int) -> str | None:
    """Which arm of ``plan`` a labeled example counts for (None: not this plan's).

    Examples scored before the plan started, or by another version, say
    nothing about this plan's arms.

    >>> p = RolloutPlan("m", "3", "2", plan_id="p", created_ms=1000)
    >>> [plan_arm(p, v, t) for v, t in (("3", 2000), ("2", 2000), ("2", 999), ("1", 2000))]
    ['candidate', 'champion', None, None]
    """
    if event_time_ms < plan.created_ms:
        return None
    if model_version == plan.candidate_version:
        return CANDIDATE
    if model_version == plan.champion_version:
        return CHAMPION
    return None
