"""Evolution search of spec compression §6: budget, population sizes, toy optimum, exact resume."""

import json
import random

import numpy as np
import pytest

from psr.errors import CheckpointError, ConfigError
from psr.models.mobile_resnet import CHANNEL_CANDIDATES
from psr.models.profile import mobile_resnet_profile
from psr.search.evolution import (
    JOURNAL_FILE,
    RESULT_FILE,
    STATE_FILE,
    EvolutionSearch,
    EvolutionSettings,
    config_key,
    run_search,
    sampling_weights,
)

CYCLEGAN = [list(CHANNEL_CANDIDATES["channels-64-cycleGAN"])] * 8
H2Z_BUDGET = 3e9


def student_macs(config):
    return mobile_resnet_profile(config).macs


def toy_metric(target):
    """A "FID" whose unique minimum 0 is `target`: L1 distance in candidate-index units."""
    def metric(config):
        return float(sum(abs(CYCLEGAN[0].index(a) - CYCLEGAN[0].index(b)) for a, b in zip(config, target)))
    return metric


class Recorder:
    """Wraps a metric and records every call."""

    def __init__(self, metric, fail_after=None):
        self.metric = metric
        self.calls = []
        self.fail_after = fail_after

    def __call__(self, config):
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise KeyboardInterrupt("simulated crash")
        self.calls.append(config_key(config))
        return self.metric(config)


TARGET = (16, 16, 32, 16, 16, 64, 16, 24)  # the h2z test.sh config, 2.962G <= 3e9


def test_sampling_weights_of_the_code():
    assert sampling_weights([64, 48, 32, 24, 16], 2) == [4, 5, 6, 7, 8]
    assert sampling_weights([64, 48, 32, 24, 16], 1) is None
    assert sampling_weights([64, 56, 48, 40, 32, 24, 16], 3) == [3, 4, 5, 6, 7, 8, 9]


def test_weighted_first_generation_frequencies():
    settings = EvolutionSettings(population_size=4000, generations=0, weighted_sample=2, seed=1)
    search = EvolutionSearch(CYCLEGAN, lambda c: 0.0, student_macs, 1e12, settings)
    search.start()
    draws = np.array([[int(v) for v in ind.config.split("_")] for ind in search.population]).ravel()
    n = draws.size
    for width, weight in zip(CYCLEGAN[0], [4, 5, 6, 7, 8]):
        p = weight / 30
        # 5 binomial standard deviations.
        assert abs(np.mean(draws == width) - p) <= 5 * np.sqrt(p * (1 - p) / n)


def test_every_evaluated_config_is_within_budget_and_population_sizes():
    recorder = Recorder(toy_metric(TARGET))
    settings = EvolutionSettings(generations=3, mutate_prob=0.4, weighted_sample=2)
    sizes = []
    search = EvolutionSearch(CYCLEGAN, recorder, student_macs, H2Z_BUDGET, settings)
    search.run(after_step=lambda s: sizes.append(len(s.population)))
    assert sizes == [100, 125, 125, 125]  # first population, then 25 parents + 100 children
    assert len(search.parents) == 25
    assert recorder.calls and all(student_macs(tuple(map(int, k.split("_")))) <= H2Z_BUDGET for k in recorder.calls)
    assert len(set(recorder.calls)) == len(recorder.calls)  # cached by config: each evaluated once
    assert all(ind.macs <= H2Z_BUDGET for ind in search.population)


def test_finds_the_known_optimum_and_best_list_improves():
    settings = EvolutionSettings(population_size=60, generations=25, mutate_prob=0.4, seed=4)
    result = EvolutionSearch(CYCLEGAN, toy_metric(TARGET), student_macs, H2Z_BUDGET, settings).run()
    assert result.best_config == TARGET and result.best[-1].metric == 0.0
    metrics = [ind.metric for ind in result.best]
    assert all(a > b for a, b in zip(metrics, metrics[1:]))  # appended only when strictly better


def test_higher_is_better_maximises():
    settings = EvolutionSettings(population_size=60, generations=25, mutate_prob=0.3, seed=5)
    result = EvolutionSearch(
        CYCLEGAN, lambda c: -toy_metric(TARGET)(c), student_macs, H2Z_BUDGET, settings, higher_is_better=True
    ).run()
    assert result.best_config == TARGET and result.parents[0].metric == 0.0


def reference_search(candidates, metric, macs, budget, settings):
    """Independent re-statement of the released loop with the global generators (`set_seed`)."""
    random.seed(settings.seed)
    np.random.seed(settings.seed)
    cache = {}
    evaluated = []

    def fits(channels):
        return macs(tuple(channels)) <= budget

    def value(channels):
        key = "_".join(map(str, channels))
        if key not in cache:
            evaluated.append(key)
            cache[key] = metric(tuple(channels))
        return cache[key]

    def weights_for(options):
        if settings.weighted_sample > 1.0001:
            start = (len(options) - 1) / (settings.weighted_sample - 1)
            return [start + i for i in range(len(options))]
        return None

    population = []
    pool = []
    for _ in range(settings.population_size):
        while True:
            sample = [random.choices(opts, weights=weights_for(opts))[0] for opts in candidates]
            if fits(sample):
                break
        pool.append(sample)
    population = [(value(s), s) for s in pool]
    best = []
    mutations = int(round(settings.mutation_ratio * settings.population_size))
    n_parents = int(round(settings.parent_ratio * settings.population_size))
    parents = []
    for _ in range(settings.generations):
        parents = sorted(population, key=lambda item: item[0])[:n_parents]
        if not best or parents[0][0] < best[-1][0]:
            best.append(parents[0])
        pool = []
        for _ in range(mutations):
            parent = parents[np.random.randint(n_parents)][1]
            while True:
                child = list(parent)
                for i in range(len(child)):
                    if random.random() < settings.mutate_prob:
                        child[i] = random.choice(candidates[i])
                if fits(child):
                    break
            pool.append(child)
        for _ in range(settings.population_size - mutations):
            a = parents[np.random.randint(n_parents)][1]
            b = parents[np.random.randint(n_parents)][1]
            while True:
                child = [random.choice([x, y]) for x, y in zip(a, b)]
                if fits(child):
                    break
            pool.append(child)
        population = parents + [(value(c), c) for c in pool]
    return evaluated, [("_".join(map(str, c)), v) for v, c in best], ["_".join(map(str, c)) for _, c in parents]


def test_same_draws_as_the_released_loop():
    settings = EvolutionSettings(population_size=30, generations=6, mutate_prob=0.4, weighted_sample=2, seed=233)
    metric = toy_metric((24, 16, 32, 16, 32, 48, 16, 16))
    recorder = Recorder(metric)
    result = EvolutionSearch(CYCLEGAN, recorder, student_macs, H2Z_BUDGET, settings).run()
    evaluated, best, parents = reference_search(CYCLEGAN, metric, student_macs, H2Z_BUDGET, settings)
    assert recorder.calls == evaluated
    assert [(ind.config, ind.metric) for ind in result.best] == best
    assert [ind.config for ind in result.parents] == parents


SETTINGS = EvolutionSettings(population_size=20, generations=6, mutate_prob=0.4, weighted_sample=2, seed=9)


def uninterrupted(tmp_path):
    recorder = Recorder(toy_metric(TARGET))
    result = run_search(tmp_path / "full", CYCLEGAN, recorder, student_macs, H2Z_BUDGET, SETTINGS)
    return recorder, result


def test_resume_after_a_generation_continues_identically(tmp_path):
    full_recorder, full = uninterrupted(tmp_path)

    class Stop(Exception):
        pass

    def stop_at_three(search):
        if search.generation == 3:
            raise Stop

    first = Recorder(toy_metric(TARGET))
    with pytest.raises(Stop):
        run_search(tmp_path / "cut", CYCLEGAN, first, student_macs, H2Z_BUDGET, SETTINGS, after_step=stop_at_three)
    state = json.loads((tmp_path / "cut" / STATE_FILE).read_text())
    assert state["generation"] == 3
    second = Recorder(toy_metric(TARGET))
    resumed = run_search(tmp_path / "cut", CYCLEGAN, second, student_macs, H2Z_BUDGET, SETTINGS)
    assert first.calls + second.calls == full_recorder.calls
    assert [i.to_json() for i in resumed.best] == [i.to_json() for i in full.best]
    assert [i.to_json() for i in resumed.parents] == [i.to_json() for i in full.parents]
    assert resumed.generation_best == full.generation_best
    written = json.loads((tmp_path / "cut" / RESULT_FILE).read_text())
    assert written["chosen"] == full.best[-1].config and written == full.to_json()
    assert len(written["final_parents"]) == SETTINGS.parents_size
    final_full = json.loads((tmp_path / "full" / STATE_FILE).read_text())
    final_cut = json.loads((tmp_path / "cut" / STATE_FILE).read_text())
    assert final_cut == final_full


def test_crash_inside_a_generation_reuses_journalled_evaluations(tmp_path):
    full_recorder, full = uninterrupted(tmp_path)
    crash_at = len(full_recorder.calls) // 2
    first = Recorder(toy_metric(TARGET), fail_after=crash_at)
    with pytest.raises(KeyboardInterrupt):
        run_search(tmp_path / "cut", CYCLEGAN, first, student_macs, H2Z_BUDGET, SETTINGS)
    assert len((tmp_path / "cut" / JOURNAL_FILE).read_text().splitlines()) == crash_at
    second = Recorder(toy_metric(TARGET))
    resumed = run_search(tmp_path / "cut", CYCLEGAN, second, student_macs, H2Z_BUDGET, SETTINGS)
    assert first.calls + second.calls == full_recorder.calls  # nothing evaluated twice
    assert [i.to_json() for i in resumed.best] == [i.to_json() for i in full.best]
    # A finished search reruns without evaluating anything.
    third = Recorder(toy_metric(TARGET))
    again = run_search(tmp_path / "cut", CYCLEGAN, third, student_macs, H2Z_BUDGET, SETTINGS)
    assert third.calls == [] and again.best_config == resumed.best_config


def test_state_of_another_search_or_foreign_file_is_refused(tmp_path):
    run_search(tmp_path, CYCLEGAN, toy_metric(TARGET), student_macs, H2Z_BUDGET,
               EvolutionSettings(population_size=10, generations=1))
    with pytest.raises(CheckpointError, match="other budget"):
        run_search(tmp_path, CYCLEGAN, toy_metric(TARGET), student_macs, 4e9,
                   EvolutionSettings(population_size=10, generations=1))
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / STATE_FILE).write_text('{"something": 1}')
    with pytest.raises(CheckpointError, match="not a psr evolution-search state"):
        run_search(foreign, CYCLEGAN, toy_metric(TARGET), student_macs, H2Z_BUDGET, SETTINGS)
    assert (foreign / STATE_FILE).read_text() == '{"something": 1}'  # not replaced


def test_bad_settings_and_budgets_are_one_line_errors():
    with pytest.raises(ConfigError, match="below the smallest configuration 16_16_16"):
        EvolutionSearch(CYCLEGAN, toy_metric(TARGET), student_macs, 1e9)
    with pytest.raises(ConfigError, match="mutate_prob"):
        EvolutionSettings(mutate_prob=1.5)
    with pytest.raises(ConfigError, match="positive number"):
        EvolutionSearch(CYCLEGAN, toy_metric(TARGET), student_macs, -1)
