"""Evolution search for a channel configuration under a MACs budget (spec compression §6).

A pure-Python engine: it knows nothing about networks or images. It takes

- `candidates`: one list of widths per config entry, widest first (the spec's lists, §3.2);
- `evaluate(config) -> float`: the search metric of a sub-network (FID: lower is better;
  mIoU: `higher_is_better=True`);
- `macs(config) -> int` and a `budget`: only configs with macs <= budget are ever evaluated.

Algorithm (the released `evolution_search.py`):
1. Sample `population_size` configs, each redrawn until it fits the budget (the first
   generation may favour narrow widths: `weighted_sample`), and evaluate them.
2. Each generation: sort the population by the metric (stable), keep the best
   `parent_ratio · P` as parents; if the best parent beats the best so far, append it to the best
   list. Children: `mutation_ratio · P` mutations (a random parent; each entry redrawn uniformly
   with probability `mutate_prob`) and the rest crossovers (two random parents, possibly the
   same; each entry from either with probability ½); each child is redrawn until it fits the
   budget. The next population is parents + children (25 + 100 = 125 with the defaults).
3. After the last generation: the best list (its last entry is the answer) and the final parents.
   As in the code, the children made in the last generation are evaluated but never ranked.

Metrics and MACs are cached by config string, so a config is evaluated once. The draws use
`random.Random(seed)` and `numpy.random.RandomState(seed)` in the same calls and order as the code
(`random.choices`, `random.random`, `random.choice`, `np.random.randint`), so with the same metric
values the search visits the same configs as the released code seeded with `set_seed(seed)`.

`EvolutionSearch.state()` is JSON-serialisable and holds everything (population, best list,
caches, both generator states); `run_search` writes it atomically after the first population and
after every generation, and appends each new evaluation to a journal, so a rerun resumes exactly
where it stopped and does not recompute evaluations finished after the last state.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np

from psr.errors import CheckpointError, ConfigError

STATE_FILE = "search_state.json"
JOURNAL_FILE = "evaluations.jsonl"
RESULT_FILE = "best_configs.json"
STATE_FORMAT = "psr-evolution-search"
STATE_VERSION = 1
# A budget so tight that a million draws find nothing would loop forever in the released code.
MAX_DRAWS = 1_000_000


def config_key(config: Sequence[int]) -> str:
    """The code's config string: entries joined by "_"."""
    return "_".join(str(int(v)) for v in config)


def parse_key(key: str) -> tuple[int, ...]:
    return tuple(int(v) for v in key.split("_"))


@dataclass(frozen=True)
class EvolutionSettings:
    """Search settings (`options/evolution_options.py`; h2z script values in comments, spec §1.1)."""

    population_size: int = 100
    generations: int = 500  # evolution_iters
    mutation_ratio: float = 0.5
    parent_ratio: float = 0.25
    mutate_prob: float = 0.2  # h2z 0.4, map2sat / Cityscapes 0.3
    weighted_sample: float = 1.0  # h2z 2: the first generation favours narrow widths up to 2×
    seed: int = 233

    def __post_init__(self):
        def bad(name, value, rule):
            raise ConfigError(f"search setting {name}={value!r} is invalid: it must be {rule}.")

        for name in ("population_size", "generations"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (1 if name == "population_size" else 0):
                bad(name, value, "an integer >= 1" if name == "population_size" else "an integer >= 0")
        for name in ("mutation_ratio", "parent_ratio", "mutate_prob"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                bad(name, value, "a number in [0, 1]")
        if not isinstance(self.weighted_sample, (int, float)) or self.weighted_sample < 1.0:
            bad("weighted_sample", self.weighted_sample, "a number >= 1 (1 = uniform)")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            bad("seed", self.seed, "an integer >= 0")
        if self.parents_size < 1:
            bad("parent_ratio", self.parent_ratio, f"large enough to keep one parent of {self.population_size}")

    @property
    def mutation_count(self) -> int:
        return int(round(self.mutation_ratio * self.population_size))

    @property
    def parents_size(self) -> int:
        return int(round(self.parent_ratio * self.population_size))


def sampling_weights(options: Sequence[int], weighted_sample: float) -> Optional[list[float]]:
    """Weights of `ChannelConfigs.sample`: (n−1)/(w−1), +1, +1, … over the list (widest first); None = uniform.

    With w = 2 and 5 options: 4, 5, 6, 7, 8, so the narrowest width is drawn twice as often as the widest.
    """
    if weighted_sample <= 1.0001:  # the code's threshold
        return None
    start = (len(options) - 1) / (weighted_sample - 1)
    return [start + index for index in range(len(options))]


@dataclass
class Individual:
    """A config in the population with its MACs and metric."""

    config: str
    macs: int
    metric: float

    def to_json(self) -> dict:
        return {"config": self.config, "macs": self.macs, "metric": self.metric}

    @classmethod
    def from_json(cls, value: dict) -> "Individual":
        return cls(str(value["config"]), int(value["macs"]), float(value["metric"]))


@dataclass
class SearchResult:
    """`best`: improving best configs, one per generation that improved (last = the answer); `parents`: final parents."""

    best: list[Individual]
    parents: list[Individual]
    generation_best: list[float] = field(default_factory=list)  # best metric so far after each generation

    @property
    def best_config(self) -> tuple[int, ...]:
        return parse_key(self.best[-1].config)

    def to_json(self) -> dict:
        """`best_infos` / `final_parents` of the code as JSON; `chosen` is the answer."""
        return {
            "chosen": self.best[-1].config if self.best else None,
            "best": [ind.to_json() for ind in self.best],
            "final_parents": [ind.to_json() for ind in self.parents],
            "generation_best": list(self.generation_best),
        }


class EvolutionSearch:
    """The engine. Call `run()`; `state()` / `from_state()` make it resumable.

    Args:
        candidates: per config entry, the list of widths (widest first).
        evaluate: config tuple -> metric (called once per distinct config).
        macs: config tuple -> MACs.
        budget: largest MACs allowed.
        settings: `EvolutionSettings`.
        higher_is_better: True for mIoU, False for FID.
        on_evaluated: optional hook `(config_string, metric)` after each new evaluation (a journal).
    """

    def __init__(
        self,
        candidates: Sequence[Sequence[int]],
        evaluate: Callable[[tuple[int, ...]], float],
        macs: Callable[[tuple[int, ...]], int],
        budget: float,
        settings: EvolutionSettings = EvolutionSettings(),
        higher_is_better: bool = False,
        on_evaluated: Optional[Callable[[str, float], None]] = None,
    ):
        self.candidates = [[int(v) for v in options] for options in candidates]
        if not self.candidates or any(not options for options in self.candidates):
            raise ConfigError("the search needs a non-empty list of candidate widths for every config entry.")
        if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not budget > 0:
            raise ConfigError(f"the MACs budget must be a positive number, got {budget!r}; pass e.g. --budget 3e9.")
        self.evaluate_fn = evaluate
        self.macs_fn = macs
        self.budget = float(budget)
        self.settings = settings
        self.higher_is_better = bool(higher_is_better)
        self.on_evaluated = on_evaluated
        smallest = tuple(min(options) for options in self.candidates)
        smallest_macs = int(macs(smallest))
        if smallest_macs > self.budget:
            raise ConfigError(
                f"the MACs budget {self.budget:.4g} is below the smallest configuration "
                f"{config_key(smallest)} ({smallest_macs:.4g} MACs); raise the budget."
            )
        self.python_rng = random.Random(settings.seed)
        self.numpy_rng = np.random.RandomState(settings.seed)
        self.macs_cache: dict[str, int] = {}
        self.result_cache: dict[str, float] = {}
        self.population: list[Individual] = []
        self.parents: list[Individual] = []
        self.best: list[Individual] = []
        self.generation_best: list[float] = []
        self.generation = 0  # completed generations
        self.started = False  # the first population is evaluated
        self.evaluation_calls = 0

    # === Sampling (each redrawn until it fits the budget) ===
    def _fits(self, config: list[int]) -> Optional[int]:
        key = config_key(config)
        value = self.macs_cache.get(key)
        if value is None:
            value = int(self.macs_fn(tuple(config)))
            self.macs_cache[key] = value
        return value if value <= self.budget else None

    def _redraw_until_fits(self, draw: Callable[[], list[int]]) -> tuple[list[int], int]:
        for _ in range(MAX_DRAWS):
            config = draw()
            value = self._fits(config)
            if value is not None:
                return config, value
        raise ConfigError(
            f"no configuration within the MACs budget {self.budget:.4g} was drawn in {MAX_DRAWS} tries; raise the budget."
        )

    def _random_config(self) -> list[int]:
        config = []
        for options in self.candidates:
            weights = sampling_weights(options, self.settings.weighted_sample)
            config.append(self.python_rng.choices(options, weights=weights)[0])
        return config

    def _mutate(self, parent: str) -> list[int]:
        config = list(parse_key(parent))
        for index, options in enumerate(self.candidates):
            if self.python_rng.random() < self.settings.mutate_prob:
                config[index] = self.python_rng.choice(options)
        return config

    def _crossover(self, first: str, second: str) -> list[int]:
        return [self.python_rng.choice([a, b]) for a, b in zip(parse_key(first), parse_key(second))]

    # === Evaluation (cached by config string) ===
    def _evaluate(self, configs: list[list[int]], macs: list[int]) -> list[Individual]:
        individuals = []
        for config, value in zip(configs, macs):
            key = config_key(config)
            metric = self.result_cache.get(key)
            if metric is None:
                metric = float(self.evaluate_fn(tuple(config)))
                if math.isnan(metric):
                    raise ConfigError(f"the search metric of {key} is NaN; check the supernet weights and the search data.")
                self.evaluation_calls += 1
                self.result_cache[key] = metric
                if self.on_evaluated is not None:
                    self.on_evaluated(key, metric)
            individuals.append(Individual(key, value, metric))
        return individuals

    def _better(self, a: float, b: float) -> bool:
        return a > b if self.higher_is_better else a < b

    # === Steps ===
    def start(self) -> None:
        """Samples and evaluates the first population (no-op once done)."""
        if self.started:
            return
        drawn = [self._redraw_until_fits(self._random_config) for _ in range(self.settings.population_size)]
        self.population = self._evaluate([c for c, _ in drawn], [m for _, m in drawn])
        self.started = True

    def step(self) -> None:
        """One generation: rank, keep parents, record the best, breed and evaluate the children."""
        settings = self.settings
        ranked = sorted(self.population, key=lambda ind: ind.metric, reverse=self.higher_is_better)
        self.parents = ranked[: settings.parents_size]
        leader = self.parents[0]
        if not self.best or self._better(leader.metric, self.best[-1].metric):
            self.best.append(leader)
        self.generation_best.append(self.best[-1].metric)
        size = len(self.parents)
        children = []
        for _ in range(settings.mutation_count):
            parent = self.parents[self.numpy_rng.randint(size)].config
            children.append(self._redraw_until_fits(lambda: self._mutate(parent)))
        for _ in range(settings.population_size - settings.mutation_count):
            first = self.parents[self.numpy_rng.randint(size)].config
            second = self.parents[self.numpy_rng.randint(size)].config
            children.append(self._redraw_until_fits(lambda: self._crossover(first, second)))
        evaluated = self._evaluate([c for c, _ in children], [m for _, m in children])
        self.population = list(self.parents) + evaluated
        self.generation += 1

    @property
    def finished(self) -> bool:
        return self.started and self.generation >= self.settings.generations

    def run(self, after_step: Optional[Callable[["EvolutionSearch"], None]] = None) -> SearchResult:
        """Runs to the last generation; `after_step(self)` is called after the first population and each generation."""
        if not self.started:
            self.start()
            if after_step is not None:
                after_step(self)
        while not self.finished:
            self.step()
            if after_step is not None:
                after_step(self)
        return self.result()

    def result(self) -> SearchResult:
        return SearchResult(best=list(self.best), parents=list(self.parents), generation_best=list(self.generation_best))

    # === State ===
    def _identity(self) -> dict:
        return {
            "settings": asdict(self.settings),
            "candidates": self.candidates,
            "budget": self.budget,
            "higher_is_better": self.higher_is_better,
        }

    def state(self) -> dict:
        """Everything needed to continue exactly: JSON-serialisable."""
        version, internal, gauss = self.python_rng.getstate()
        name, keys, position, has_gauss, cached = self.numpy_rng.get_state(legacy=True)
        return {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            **self._identity(),
            "started": self.started,
            "generation": self.generation,
            "population": [ind.to_json() for ind in self.population],
            "parents": [ind.to_json() for ind in self.parents],
            "best": [ind.to_json() for ind in self.best],
            "generation_best": list(self.generation_best),
            "macs_cache": dict(self.macs_cache),
            "result_cache": dict(self.result_cache),
            "rng": {
                "python": [version, list(internal), gauss],
                "numpy": [name, [int(k) for k in keys], int(position), int(has_gauss), float(cached)],
            },
        }

    def load_state(self, state: dict, source: str = "the search state") -> None:
        """Continues from `state()` output; refuses one written by a search with other settings."""
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT or state.get("version") != STATE_VERSION:
            raise CheckpointError(f"{source} is not a psr evolution-search state; pass the folder a search wrote.")
        stored = {key: state.get(key) for key in self._identity()}
        current = json.loads(json.dumps(self._identity()))
        if stored != current:
            changed = sorted(key for key in current if stored[key] != current[key])
            raise CheckpointError(
                f"{source} was written by a search with other {', '.join(changed)}; "
                "rerun with the same settings, or start anew (`main.py search ... --restart`, or another folder)."
            )
        try:
            self.started = bool(state["started"])
            self.generation = int(state["generation"])
            self.population = [Individual.from_json(v) for v in state["population"]]
            self.parents = [Individual.from_json(v) for v in state["parents"]]
            self.best = [Individual.from_json(v) for v in state["best"]]
            self.generation_best = [float(v) for v in state["generation_best"]]
            self.macs_cache = {str(k): int(v) for k, v in state["macs_cache"].items()}
            self.result_cache.update({str(k): float(v) for k, v in state["result_cache"].items()})
            version, internal, gauss = state["rng"]["python"]
            self.python_rng.setstate((version, tuple(internal), gauss))
            name, keys, position, has_gauss, cached = state["rng"]["numpy"]
            self.numpy_rng.set_state((name, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached))
        except (KeyError, TypeError, ValueError) as err:
            raise CheckpointError(f"{source} is damaged ({type(err).__name__}: {err}); remove it to start the search anew.") from None


def _read_journal(path: Path) -> dict[str, float]:
    """Evaluations recorded one JSON object per line; a line cut short by a crash is skipped."""
    results = {}
    if not path.exists():
        return results
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
            results[str(entry["config"])] = float(entry["metric"])
        except (ValueError, KeyError, TypeError):
            continue
    return results


def run_search(
    output_dir: Union[str, Path],
    candidates: Sequence[Sequence[int]],
    evaluate: Callable[[tuple[int, ...]], float],
    macs: Callable[[tuple[int, ...]], int],
    budget: float,
    settings: EvolutionSettings = EvolutionSettings(),
    higher_is_better: bool = False,
    after_step: Optional[Callable[[EvolutionSearch], None]] = None,
) -> SearchResult:
    """Runs (or resumes) a search whose state lives in `output_dir`.

    Writes `search_state.json` atomically after the first population and after every generation,
    and appends each new evaluation to `evaluations.jsonl` (fsynced), whose entries a rerun reuses;
    at the end `best_configs.json` (`SearchResult.to_json()`).
    """
    from psr.rundir import append_line, atomic_write_json

    folder = Path(output_dir)
    state_path = folder / STATE_FILE
    journal_path = folder / JOURNAL_FILE

    def record(key: str, metric: float) -> None:
        append_line(journal_path, json.dumps({"config": key, "metric": metric}))

    search = EvolutionSearch(candidates, evaluate, macs, budget, settings, higher_is_better, on_evaluated=record)
    if state_path.exists():
        try:
            state = json.loads(state_path.read_text(encoding="utf-8"))
        except ValueError:
            raise CheckpointError(f"{state_path} is not valid JSON; remove it to start the search anew.") from None
        search.load_state(state, source=str(state_path))
    # Evaluations finished after the last state was written are reused (they are deterministic).
    for key, metric in _read_journal(journal_path).items():
        search.result_cache.setdefault(key, metric)

    def save(current: EvolutionSearch) -> None:
        atomic_write_json(state_path, current.state(), indent=None)
        if after_step is not None:
            after_step(current)

    result = search.run(after_step=save)
    atomic_write_json(folder / RESULT_FILE, result.to_json())
    return result
