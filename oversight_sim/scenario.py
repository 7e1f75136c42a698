"""Scenarios: a simulated federation described in a TOML file (or in Python).

A scenario says which carriers there are (synthetic, of given sizes and skew, or a carrier's
own extract directories), what groups are planted in them (a rare cell, a dominant claimant,
late claims), each carrier's policy and node settings, and which faults strike at given
moments. The test fixtures of :mod:`fedoversight.testing` and ``oversight demo --scenario``
read the same files. An example, with every key::

    name = "five carriers, one killed mid-round"
    carriers = 5              # synthetic carriers c001, c002, ...
    members = 5000            # members across them; the first has about 70%
    # sizes = [3000, 1000, 500, 300, 200]   # or each carrier's members
    # skew = 1.2              # or sizes in proportion to rank ** -skew
    seed = 7
    year = 2026
    months = 3
    file_format = "parquet"   # or "csv"
    secure = true             # mutual TLS and signatures (false: plaintext demo)
    engine_threads = 1

    [policy]                  # every carrier's policy (the node's policy file's keys)
    perturbation = { enabled = false }

    [policies.c002]           # a carrier's own policy, instead of [policy]
    release_mode = "manual"

    [node_settings.c003]      # a carrier's own node settings (its node.toml keys)
    control_totals_file = "totals/c003.toml"

    [[plant]]
    kind = "rare_cell"        # 3 members alone in a state
    carrier = "c001"
    state = "WY"

    [[faults]]
    carrier = "c004"
    action = "kill"           # stop, kill, slow or restart
    round = 1                 # the first round the federation runs
    moment = "request"        # when its request reaches the node ("before": before the round)

Relative paths (``data_dirs``, a ``policy`` given as a file name, node settings' files) are
read from the scenario file's directory.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fedoversight.errors import ConfigError

#: Where each kind of planted group goes by default (states no synthetic member is left in).
PLANT_STATES = {"rare_cell": "WY", "dominant_claimant": "ND", "late_claims": "SD"}
#: How many members each kind of planted group has by default.
PLANT_MEMBERS = {"rare_cell": 3, "dominant_claimant": 15, "late_claims": 12}


class Plant(BaseModel):
    """A small group added to a synthetic carrier, alone in a state of its own so a query by
    state isolates it. Every member of that carrier is made enrolled throughout (from the
    January of the year before the scenario's year), so the group's cells are what is
    planted and nothing else.

    - ``rare_cell``: ``members`` members (3) each with one office visit in ``month``;
    - ``dominant_claimant``: ``members`` members (15) with a visit in ``month``, one of them
      (the only one aged 65 or over) with ``allowed`` dollars (2,000,000);
    - ``late_claims``: ``members`` members (12) with a visit in ``month``; after round
      ``round`` (1) the carrier replaces its files, which now hold a late claim of ``allowed``
      dollars (777) for the group's second member in that month.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["rare_cell", "dominant_claimant", "late_claims"]
    carrier: str = "c001"
    state: str = ""
    members: int = Field(default=0, ge=0)
    month: int = Field(default=2, ge=1, le=12)
    allowed: float = 0.0
    round: int = Field(default=1, ge=1)

    @property
    def where(self) -> str:
        return self.state or PLANT_STATES[self.kind]

    @property
    def size(self) -> int:
        return self.members or PLANT_MEMBERS[self.kind]

    @property
    def dollars(self) -> float:
        if self.allowed:
            return self.allowed
        return 2_000_000.0 if self.kind == "dominant_claimant" else 777.0


class Fault(BaseModel):
    """Something that happens to a carrier's node at a given moment of a given round.

    ``action``: ``stop`` (a clean shutdown), ``kill`` (the stream cut, nothing finished),
    ``slow`` (each request reaches the node ``seconds`` late, from then on) or ``restart``
    (stopped and started again on its state directory). ``round``: the round, counted from 1,
    among those the federation's client runs. ``moment``: ``before`` the round is created, or
    when the round's ``request`` reaches the node (a node stopped or killed then never
    answers it).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    carrier: str
    action: Literal["stop", "kill", "slow", "restart"]
    round: int = Field(default=1, ge=1)
    moment: Literal["before", "request"] = "request"
    seconds: float = Field(default=0.0, ge=0)

    @model_validator(mode="after")
    def _slow_needs_seconds(self) -> Fault:
        if self.action == "slow" and not self.seconds:
            raise ValueError("a slow fault needs seconds")
        return self


class Scenario(BaseModel):
    """A simulated federation: carriers, their data and policies, faults (see the module
    docstring for the TOML form). Frozen: derive one with ``model_copy(update=...)``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = ""
    #: Synthetic carriers (ids ``c001``, ``c002``, ...; ``c0001``... from 1,000 on).
    carriers: int = Field(default=3, ge=1)
    #: Members across the synthetic carriers (the first has about 70% unless sizes or skew).
    members: int = Field(default=3_000, ge=30)
    #: Each carrier's members (then ``carriers`` is their number).
    sizes: tuple[int, ...] | None = None
    #: Carrier sizes in proportion to rank ** -skew (0: equal sizes).
    skew: float | None = Field(default=None, ge=0)
    seed: int = 7
    year: int = 2026
    months: int = Field(default=3, ge=1, le=12)
    file_format: Literal["parquet", "csv"] = "parquet"
    #: A large federation: ``carriers`` carriers share this many synthetic datasets and answer
    #: from canned engines (:mod:`oversight_sim.canned`); 0: every carrier has its own data.
    datasets: int = Field(default=0, ge=0)
    #: The carriers' own directories (carrier id to directory) instead of synthetic ones.
    data_dirs: dict[str, Path] = Field(default_factory=dict)
    #: Mutual TLS and signed requests and results, as in production (False: a plaintext demo).
    secure: bool = True
    engine_threads: int = Field(default=1, ge=1)
    #: Worker processes hosting the nodes (0: in the test's process; faults need 0).
    node_processes: int = Field(default=0, ge=0)
    connect_timeout: float = Field(default=60.0, gt=0)
    #: A round's deadline when the client is not given one.
    deadline_seconds: int = Field(default=120, ge=1)
    #: Every carrier's policy: the policy file's keys, or a policy file.
    policy: dict[str, Any] | Path | None = None
    #: A carrier's own policy (keys or a file) instead of ``policy``.
    policies: dict[str, dict[str, Any] | Path] = Field(default_factory=dict)
    #: A carrier's own node settings (``NodeConfig`` keys: a warehouse, control totals, ...).
    node_settings: dict[str, dict[str, Any]] = Field(default_factory=dict)
    plant: tuple[Plant, ...] = ()
    faults: tuple[Fault, ...] = ()

    @model_validator(mode="after")
    def _consistent(self) -> Scenario:
        if self.sizes is not None:
            if len(self.sizes) != self.carriers and "carriers" in self.model_fields_set:
                raise ValueError("sizes must have one entry per carrier")
            if min(self.sizes) < 30:
                raise ValueError("a synthetic carrier needs at least 30 members")
        if self.datasets and (self.sizes is not None or self.skew is not None or self.plant):
            raise ValueError("datasets (a canned federation) takes neither sizes, skew nor plant")
        if self.data_dirs and (self.plant or self.datasets):
            raise ValueError("the carriers' own data_dirs take neither plant nor datasets")
        if self.plant and self.file_format != "parquet":
            raise ValueError("planted groups need parquet files")
        if self.node_processes and self.faults:
            raise ValueError("faults need the nodes in the test's process (node_processes = 0)")
        return self

    @property
    def carrier_count(self) -> int:
        if self.data_dirs:
            return len(self.data_dirs)
        return len(self.sizes) if self.sizes is not None else self.carriers

    @property
    def canned(self) -> bool:
        return self.datasets > 0

    def data_key(self) -> str:
        """What the carriers' files depend on (scenarios with equal keys share their data)."""
        return self.model_dump_json(
            include={
                "carriers",
                "members",
                "sizes",
                "skew",
                "seed",
                "year",
                "months",
                "file_format",
                "datasets",
                "data_dirs",
                "plant",
            }
        )

    def with_changes(self, **changes: Any) -> Scenario:
        """A validated copy with ``changes`` (the keys of the TOML form)."""
        return scenario_from(self.model_dump(exclude_unset=True) | changes)


def scenario_from(settings: Mapping[str, Any], base: Path | None = None) -> Scenario:
    """A validated scenario from a mapping (a TOML file's table); relative paths are read
    from ``base``."""
    try:
        scenario = Scenario.model_validate(dict(settings))
    except ValidationError as exc:
        raise ConfigError(f"invalid scenario: {exc}") from exc
    if base is None:
        return scenario
    return scenario.model_copy(
        update={
            "data_dirs": {c: base / d for c, d in scenario.data_dirs.items()},
            "policy": base / scenario.policy
            if isinstance(scenario.policy, Path)
            else scenario.policy,
            "policies": {
                c: base / p if isinstance(p, Path) else p for c, p in scenario.policies.items()
            },
            "node_settings": {
                c: {k: _under(base, k, v) for k, v in s.items()}
                for c, s in scenario.node_settings.items()
            },
        }
    )


def _under(base: Path, key: str, value: Any) -> Any:
    """Node settings naming a file or directory, read from the scenario's directory."""
    if isinstance(value, str) and (key.endswith(("_file", "_dir", "_path"))):
        return base / value
    return value


def load_scenario(path: Path | str) -> Scenario:
    """Read a scenario file (TOML; see the module docstring)."""
    path = Path(path)
    try:
        settings = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read scenario {path}: {exc}") from exc
    return scenario_from(settings, path.resolve().parent)
