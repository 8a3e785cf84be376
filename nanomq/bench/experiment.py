"""Experiment files: load, validate against experiments/schema.yaml, expand into runs.

An experiment is a YAML grid (see experiments/schema.yaml). `load_experiment(path)` checks
it (a misspelt or unknown key is an `ExperimentError` naming the key and where it is) and
expands it into `Point`s — one per configuration — each with a stable `config_hash` of its
parameters. A point's repetitions are its `Run`s. The hash covers every parameter except
the number of repetitions, so raising `repetitions` only adds runs and changing anything
else gives the configuration a new hash, hence a new output directory.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import itertools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "BUILTIN_DEFAULTS",
    "FAN_IN_TRANSPORTS",
    "MULTI_TRANSPORTS",
    "NANOMQ_TRANSPORTS",
    "PARAMETERS",
    "Experiment",
    "ExperimentError",
    "Point",
    "Run",
    "config_hash",
    "load_experiment",
    "parse_experiment",
    "schema_path",
]

# Every parameter of a point, in the order tables show them.
PARAMETERS = (
    "transport",
    "message_size",
    "rate",
    "batch_size",
    "producers",
    "consumers",
    "duration_s",
    "warmup_s",
    "fsync",
    "wait",
    "pin",
    "options",
)
BUILTIN_DEFAULTS: dict[str, Any] = {
    "message_size": 64,
    "rate": 10_000,
    "batch_size": 1,
    "producers": 1,
    "consumers": 1,
    "duration_s": 5.0,
    "warmup_s": 1.0,
    "repetitions": 3,
    "fsync": "never",
    "wait": "spin",
    "pin": True,
    "options": {},
}
NANOMQ_TRANSPORTS = frozenset({"ring", "ring_c", "log", "broker"})
MULTI_TRANSPORTS = frozenset({"broker", "mp_queue", "faster_fifo", "nats", "redis"})
"""Transports whose drivers take several producer and consumer processes (nanomq.bench.group)."""
FAN_IN_TRANSPORTS = frozenset({"zmq"})
"""Transports that take several producers but one consumer."""
HASH_CHARS = 12
BATCH_MAX = 256
_SCHEMA_FILE = "schema.yaml"


class ExperimentError(ValueError):
    """An experiment file is invalid; the message names the file, the key and what is wrong."""


def schema_path() -> Path:
    """experiments/schema.yaml of this checkout."""
    return Path(__file__).resolve().parents[2] / "experiments" / _SCHEMA_FILE


def _load_schema() -> dict[str, Any]:
    import yaml

    path = schema_path()
    try:
        with open(path, encoding="utf-8") as f:
            return yaml.safe_load(f)
    except FileNotFoundError:
        raise ExperimentError(f"the experiment schema {path} is missing") from None


def config_hash(parameters: Mapping[str, Any]) -> str:
    """Stable hash of a configuration: the first 12 hex digits of SHA-256 over canonical JSON."""
    canonical = json.dumps(_plain(parameters), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:HASH_CHARS]


def _plain(value: Any) -> Any:
    """JSON-ready copy: numpy scalars and tuples become Python numbers and lists; 2.0 stays 2.0."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalar (Paramspace hands those out)
        return value.item()
    return value


@dataclass(frozen=True, slots=True)
class Point:
    """One configuration of an experiment: every parameter fixed."""

    experiment: str
    parameters: dict[str, Any]
    repetitions: int
    grids: tuple[str, ...]
    config_hash: str

    @property
    def transport(self) -> str:
        return self.parameters["transport"]

    @property
    def mode(self) -> str:
        """ "throughput" for a closed-loop run (rate max), else "latency" (open loop)."""
        return "throughput" if self.parameters["rate"] == "max" else "latency"

    @property
    def dirname(self) -> str:
        """Directory of this configuration's runs: transport and hash (the hash alone identifies it)."""
        return f"{self.transport}-{self.config_hash}"

    @property
    def label(self) -> str:
        """Short human-readable description for tables and legends."""
        p = self.parameters
        rate = "max" if p["rate"] == "max" else _si(p["rate"]) + "/s"
        parts = [p["transport"], f"{p['message_size']} B", rate]
        if p["batch_size"] != 1:
            parts.append(f"batch {p['batch_size']}")
        if p["producers"] != 1 or p["consumers"] != 1:
            parts.append(f"{p['producers']}p{p['consumers']}c")
        if p["transport"] in ("log", "broker"):
            parts.append(f"fsync={p['fsync']}")
        elif p["transport"] == "ring" and p["wait"] != "spin":
            parts.append(p["wait"])
        if p["options"]:
            parts.append(json.dumps(p["options"], sort_keys=True, separators=(",", ":")))
        return " ".join(parts)

    def runs(self) -> list[Run]:
        return [Run(self, k) for k in range(self.repetitions)]


@dataclass(frozen=True, slots=True)
class Run:
    """One repetition of a point: what one measurement job does."""

    point: Point
    repetition: int

    @property
    def run_id(self) -> str:
        return f"{self.point.dirname}-r{self.repetition}"

    @property
    def relpath(self) -> str:
        """Directory of this run's files under the results root."""
        return f"{self.point.experiment}/runs/{self.point.dirname}/r{self.repetition}"

    def spec(self, source: str | None = None) -> dict[str, Any]:
        """Everything that defines the run, as plain JSON (what `nanomq bench run --spec` takes).

        Deliberately not the experiment file's hash, its description or the grids that
        contain the point: editing those must not make a finished run look out of date.
        """
        return {
            "experiment": self.point.experiment,
            "experiment_file": source,
            "config_hash": self.point.config_hash,
            "run_id": self.run_id,
            "repetition": self.repetition,
            "parameters": _plain(self.point.parameters),
        }


@dataclass(frozen=True, slots=True)
class Experiment:
    """A validated experiment and its expanded points."""

    name: str
    description: str
    points: tuple[Point, ...]
    slo: dict[str, float] | None
    compare: dict[str, float]
    source: str | None = None
    source_sha256: str | None = None
    raw: dict[str, Any] = field(default_factory=dict)

    def runs(self) -> list[Run]:
        return [run for point in self.points for run in point.runs()]

    def point(self, config_hash: str) -> Point:
        for p in self.points:
            if p.config_hash == config_hash or p.dirname == config_hash:
                return p
        raise KeyError(f"experiment {self.name!r} has no configuration {config_hash!r}")

    def run(self, dirname_or_hash: str, repetition: int) -> Run:
        point = self.point(dirname_or_hash)
        if not 0 <= repetition < point.repetitions:
            raise KeyError(
                f"configuration {point.dirname} has repetitions 0..{point.repetitions - 1}, not {repetition}"
            )
        return Run(point, repetition)


def load_experiment(path: str | Path) -> Experiment:
    """Read, validate and expand the experiment file at `path`."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ExperimentError(f"experiment file {path} does not exist") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ExperimentError(f"{path}: not valid YAML: {exc}") from None
    return parse_experiment(data, source=str(path), source_sha256=hashlib.sha256(text.encode()).hexdigest())


def parse_experiment(data: Any, *, source: str | None = None, source_sha256: str | None = None) -> Experiment:
    """Validate an already-loaded experiment (e.g. Snakemake's `config`) and expand it."""
    where = source or "experiment"
    data = _plain(data)
    if not isinstance(data, dict) or not data:
        raise ExperimentError(f"{where}: empty experiment: expected a mapping with 'experiment' and 'grids'")
    _validate(data, where)
    defaults = {**BUILTIN_DEFAULTS, **data.get("defaults", {})}
    seen: dict[str, Point] = {}
    order: list[str] = []
    for grid in data["grids"]:
        axes = {k: v for k, v in grid.items() if k not in ("name", "description")}
        if not axes:
            raise ExperimentError(f"{where}: grid {grid['name']!r} sets no parameter")
        merged: dict[str, list[Any]] = {}
        for key, default in defaults.items():
            merged[key] = [default]
        for key, value in axes.items():
            merged[key] = value if isinstance(value, list) else [value]
        if "transport" not in merged:
            raise ExperimentError(
                f"{where}: grid {grid['name']!r} has no transport (set it in the grid or in defaults)"
            )
        keys = list(merged)
        for combo in itertools.product(*(merged[k] for k in keys)):
            values = dict(zip(keys, combo, strict=True))
            repetitions = int(values.pop("repetitions"))
            params = {k: copy.deepcopy(values[k]) for k in PARAMETERS}
            _check_point(params, where, grid["name"])
            h = config_hash(params)
            if h in seen:
                old = seen[h]
                seen[h] = Point(
                    old.experiment,
                    old.parameters,
                    max(old.repetitions, repetitions),
                    (*old.grids, grid["name"]) if grid["name"] not in old.grids else old.grids,
                    h,
                )
            else:
                seen[h] = Point(data["experiment"], params, repetitions, (grid["name"],), h)
                order.append(h)
    if not order:
        raise ExperimentError(f"{where}: the grids expand to no configuration")
    return Experiment(
        name=data["experiment"],
        description=data.get("description", "").strip(),
        points=tuple(seen[h] for h in order),
        slo=data.get("slo"),
        compare=data.get("compare", {}),
        source=source,
        source_sha256=source_sha256,
        raw=data,
    )


def _check_point(params: dict[str, Any], where: str, grid: str) -> None:
    """What the schema cannot say: combinations the load generator does not run.

    Refused here, at load time, rather than recorded as failures an hour into a sweep.
    """
    t, batch = params["transport"], params["batch_size"]
    if t in FAN_IN_TRANSPORTS and params["consumers"] != 1:
        raise ExperimentError(
            f"{where}: grid {grid!r}: {params['consumers']} consumers for transport {t}: its driver takes "
            f"several producers but one consumer (PUSH sockets into one PULL); use consumers: 1"
        )
    if (
        params["producers"] != 1 or params["consumers"] != 1
    ) and t not in MULTI_TRANSPORTS | FAN_IN_TRANSPORTS:
        why = {
            "ring": "the ring is single-producer single-consumer",
            "ring_c": "the ring is single-producer single-consumer",
            "stall": "the ring is single-producer single-consumer",
            "log": "a log has one writer (it takes an exclusive lock)",
        }.get(t, "its driver runs one of each")
        raise ExperimentError(
            f"{where}: grid {grid!r}: {params['producers']} producers and {params['consumers']} consumers "
            f"for transport {t}: {why}; use producers: 1 and consumers: 1 "
            f"(several run on {', '.join(sorted(MULTI_TRANSPORTS))}; several producers on "
            f"{', '.join(sorted(FAN_IN_TRANSPORTS))})"
        )
    if params["rate"] != "max" and batch != 1:
        raise ExperimentError(
            f"{where}: grid {grid!r}: batch_size {batch} with rate {params['rate']}: open-loop latency "
            "runs send one message per call; batch sizes apply to closed-loop runs (rate: max)"
        )
    if params["rate"] == "max" and t != "ring_c" and batch not in (1, BATCH_MAX):
        raise ExperimentError(
            f"{where}: grid {grid!r}: batch_size {batch} for {t}: the Python load generator sends one "
            f"message per call or {BATCH_MAX} (ring_c takes any batch size from 1 to {BATCH_MAX})"
        )
    api = (params.get("options") or {}).get("api")
    if api is not None and (api not in ("batch", "buffer") or batch != BATCH_MAX):
        raise ExperimentError(
            f"{where}: grid {grid!r}: options.api {api!r}: use 'batch' or 'buffer', "
            f"with batch_size {BATCH_MAX}"
        )
    if api == "buffer" and t != "ring":
        raise ExperimentError(
            f"{where}: grid {grid!r}: options.api 'buffer' exists for the ring only, not {t}"
        )


# ------------------------------------------------------------------ validation ----


def _path_str(path: Any) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "top level"


def _validate(data: dict[str, Any], where: str) -> None:
    import jsonschema

    schema = _load_schema()
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(data), key=lambda e: (len(e.absolute_path), list(e.absolute_path)))
    if not errors:
        return
    # Unknown keys first: they are the likeliest mistake and the ones a reader must see named.
    for err in errors:
        if err.validator == "additionalProperties":
            allowed = sorted(err.schema.get("properties", {}))
            unknown = sorted(set(err.instance) - set(allowed))
            key = unknown[0]
            hint = difflib.get_close_matches(key, allowed, n=1)
            suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ExperimentError(
                f"{where}: unknown key {key!r} at {_path_str(err.absolute_path)}{suggestion}; "
                f"allowed keys there: {', '.join(allowed)}"
            )
    for err in errors:
        if isinstance(err.instance, list) and not err.instance:
            raise ExperimentError(
                f"{where}: {_path_str(err.absolute_path)} is empty: give at least one value"
            )
    err = jsonschema.exceptions.best_match(errors)
    # Inside oneOf/anyOf, best_match already descended; also surface unknown keys found there.
    for sub in _walk_context(err):
        if sub.validator == "additionalProperties":
            allowed = sorted(sub.schema.get("properties", {}))
            key = sorted(set(sub.instance) - set(allowed))[0]
            raise ExperimentError(f"{where}: unknown key {key!r} at {_path_str(sub.absolute_path)}")
    location = _path_str(err.absolute_path)
    if err.validator == "required":
        missing = re.findall(r"'([^']+)' is a required property", err.message)
        key = missing[0] if missing else err.message
        raise ExperimentError(f"{where}: missing required key {key!r} at {location}")
    if err.validator in ("oneOf", "anyOf") and err.context:
        reasons = list(dict.fromkeys(sub.message for sub in _walk_context(err) if not sub.context))
        raise ExperimentError(f"{where}: {location}: {err.instance!r} is not valid: {'; or '.join(reasons)}")
    raise ExperimentError(f"{where}: {location}: {err.message}")


def _walk_context(err: Any):
    for sub in err.context or ():
        yield sub
        yield from _walk_context(sub)


def _si(n: float) -> str:
    """1500 -> '1.5k', 2000000 -> '2M'."""
    for scale, suffix in ((1_000_000, "M"), (1_000, "k")):
        if n >= scale:
            return f"{n / scale:g}{suffix}"
    return f"{n:g}"
