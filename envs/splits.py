"""Generalisation splits as data: train levels and named, disjoint test conditions.

A split is a YAML file in ``configs/env/`` (or any path)::

    name: doorkey
    train: {env_id: MiniGrid-DoorKey-5x5-v0, seeds: {start: 0, count: 100000}}
    test:
      doorkey_8x8: {env_id: MiniGrid-DoorKey-8x8-v0}
    test_seeds: {start: 1000000, count: 10000}
    validation_seeds: {start: 500000, count: 10000}
    perturbations: [background, distractors]

Every split also gets an ``iid`` condition (the train environment on the test seeds) and, per
listed perturbation ``p``, an ``iid_<p>`` condition (the train environment, perturbed, on the
test seeds). With ``validation_seeds`` it also has a ``validation`` condition: the train environment on
levels of the training distribution that are neither trained on nor tested on, for tuning and for any
choice a study makes (the test levels never choose anything). It is evaluated only when named
(``eval.conditions=[validation]``), never among the test conditions. The three seed ranges never
overlap: loading such a split is an error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from envs.perturbations import PERTURBATIONS

SPLIT_DIR = Path(__file__).resolve().parent.parent / "configs" / "env"
VALIDATION = "validation"


@dataclass(frozen=True)
class SeedRange:
    """Level seeds ``start, start + 1, ..., start + count - 1``."""

    start: int
    count: int

    def __post_init__(self) -> None:
        if self.start < 0 or self.count < 1:
            raise ValueError(
                f"a seed range needs start >= 0 and count >= 1, got start={self.start}, count={self.count}"
            )

    @property
    def stop(self) -> int:
        return self.start + self.count

    def overlaps(self, other: SeedRange) -> bool:
        return self.start < other.stop and other.start < self.stop

    def __str__(self) -> str:
        return f"[{self.start}, {self.stop})"


@dataclass(frozen=True)
class Condition:
    """An environment, its level seeds and an optional perturbation."""

    name: str
    env_id: str
    seeds: SeedRange
    perturbation: str | None = None
    env_kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Split:
    """Train condition, named test conditions (``iid`` first) and, optionally, the validation condition.

    :param validation: the train environment on the validation seeds (named :data:`VALIDATION`), or None.
    """

    name: str
    train: Condition
    test: dict[str, Condition]
    validation: Condition | None = None

    @property
    def evaluable(self) -> dict[str, Condition]:
        """Every condition a policy can be evaluated on by name: the test conditions, then ``validation``."""
        return {**self.test, **({VALIDATION: self.validation} if self.validation is not None else {})}

    def condition(self, name: str) -> Condition:
        """The test or validation condition ``name``; a ``KeyError`` lists the valid ones."""
        conditions = self.evaluable
        if name not in conditions:
            raise KeyError(f"split {self.name!r} has no condition {name!r}; valid: {list(conditions)}")
        return conditions[name]


def available_splits(directory: Path = SPLIT_DIR) -> list[str]:
    """Names of the splits shipped in ``directory``."""
    return sorted(p.stem for p in directory.glob("*.yaml"))


def load_split(name_or_path: str | Path, directory: Path = SPLIT_DIR) -> Split:
    """Load a split by name (a file in ``directory``) or from a YAML path.

    :raises ValueError: unknown name (listing the valid ones), malformed file, unknown
        perturbation, or test seeds overlapping the train seeds.
    """
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = directory / f"{name_or_path}.yaml"
        if not path.is_file():
            raise ValueError(f"unknown split {str(name_or_path)!r}; valid splits: {available_splits(directory)}")
    return split_from_dict(yaml.safe_load(path.read_text()), source=str(path))


def split_from_dict(data: Any, source: str = "<dict>") -> Split:
    """Build and validate a :class:`Split` from its YAML mapping."""
    try:
        name = str(data["name"])
        train_spec = data["train"]
        train_seeds = SeedRange(**train_spec["seeds"])
        test_seeds = SeedRange(**data["test_seeds"])
        tests = dict(data.get("test") or {})
        perturbations = list(data.get("perturbations") or [])
        validation_spec = data.get("validation_seeds")
        validation_seeds = None if validation_spec is None else SeedRange(**validation_spec)
    except (KeyError, TypeError) as error:
        raise ValueError(
            f"{source}: a split needs name, train.env_id, train.seeds.start/count and test_seeds.start/count, "
            f"and validation_seeds.start/count if it has validation seeds ({error})"
        ) from error
    if train_seeds.overlaps(test_seeds):
        raise ValueError(f"split {name!r}: test seeds {test_seeds} overlap train seeds {train_seeds}")
    for other, other_seeds in (("train", train_seeds), ("test", test_seeds)):
        if validation_seeds is not None and validation_seeds.overlaps(other_seeds):
            raise ValueError(f"split {name!r}: validation seeds {validation_seeds} overlap {other} seeds {other_seeds}")
    unknown = [p for p in perturbations if p not in PERTURBATIONS]
    if unknown:
        raise ValueError(f"split {name!r}: unknown perturbations {unknown}; valid: {sorted(PERTURBATIONS)}")
    kwargs = dict(train_spec.get("env_kwargs") or {})
    train = Condition("train", str(train_spec["env_id"]), train_seeds, None, kwargs)
    conditions = {"iid": Condition("iid", train.env_id, test_seeds, None, kwargs)}
    for cond_name, spec in tests.items():
        if cond_name in conditions or cond_name == VALIDATION:
            raise ValueError(f"split {name!r}: duplicate or reserved test condition {cond_name!r}")
        perturbation = spec.get("perturbation")
        if perturbation is not None and perturbation not in PERTURBATIONS:
            raise ValueError(f"split {name!r}: unknown perturbation {perturbation!r}; valid: {sorted(PERTURBATIONS)}")
        conditions[cond_name] = Condition(
            cond_name, str(spec["env_id"]), test_seeds, perturbation, dict(spec.get("env_kwargs") or {})
        )
    for perturbation in perturbations:
        conditions[f"iid_{perturbation}"] = Condition(
            f"iid_{perturbation}", train.env_id, test_seeds, perturbation, kwargs
        )
    validation = (
        None if validation_seeds is None else Condition(VALIDATION, train.env_id, validation_seeds, None, kwargs)
    )
    return Split(name, train, conditions, validation)
