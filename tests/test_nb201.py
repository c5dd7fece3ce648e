"""NAS-Bench-201: the cell space, the packaged table (checked against the shared CSV) and the evaluator."""

from __future__ import annotations

import csv
import itertools
import pickle
import time
from pathlib import Path

import numpy as np
import pytest

from nas_env.data.paths import DatasetError
from nas_env.results import Status
from nas_env.spaces import InvalidTokenError, space_from_config
from nas_env.spaces.nb201 import EDGES, OPS, NB201Architecture, NB201Space
from nas_env.tabular import TABLE_PATH, NB201Table, TableError, TabularEvaluator

BEST_TEST = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|"
FLOAT32_COLUMNS = {"cifar10valid_train_time_per_epoch_s": 1e-6, "cifar10valid_train_time_200ep_s": 2e-4}


@pytest.fixture(scope="module")
def space() -> NB201Space:
    return NB201Space()


@pytest.fixture(scope="module")
def table() -> NB201Table:
    return NB201Table.load()


@pytest.fixture(scope="module")
def csv_rows(data_root: Path) -> list[dict[str, str]]:
    with (data_root / "nasbench201" / "nasbench201_all_15625.csv").open(newline="") as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------------------------------- the space
def test_decisions_share_one_op_head(space: NB201Space) -> None:
    assert space.num_steps == 6 and space.max_choices == 5
    assert [d.name for d in space.decisions] == [f"edge{s}->{t}" for s, t in EDGES]
    assert {d.kind for d in space.decisions} == {"op"}
    assert all(d.choices == OPS for d in space.decisions)
    assert OPS == ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
    assert space.config() == {}
    assert isinstance(space_from_config({"name": "nb201"}), NB201Space)


def test_space_covers_exactly_the_table(space: NB201Space, table: NB201Table) -> None:
    keys, indices = set(), []
    for tokens in itertools.product(range(5), repeat=6):
        arch = space.decode(tokens)
        assert space.encode(arch) == tokens
        assert NB201Architecture.from_arch_str(arch.arch_str) == arch
        index = table.index_of_architecture(arch)
        assert table.architecture(index) == arch
        assert table.arch_str(index) == arch.arch_str == space.key(arch)
        keys.add(space.key(arch))
        indices.append(index)
    assert len(keys) == 15625
    assert sorted(indices) == list(range(15625))


def test_arch_str_format_and_edge_order() -> None:
    arch = NB201Architecture.from_arch_str(BEST_TEST)
    assert arch.ops == ("nor_conv_3x3", "nor_conv_3x3", "nor_conv_3x3", "skip_connect", "nor_conv_3x3", "nor_conv_1x1")
    assert arch.arch_str == BEST_TEST and str(arch) == BEST_TEST
    assert NB201Architecture(list(arch.ops)) == arch  # lists are accepted and stored as tuples
    assert hash(NB201Architecture(list(arch.ops))) == hash(arch)


def test_json_round_trip(space: NB201Space) -> None:
    arch = space.sample(3)
    assert space.architecture_from_json(arch.to_json()) == arch
    assert NB201Architecture.from_dict({"arch_str": arch.arch_str}) == arch
    assert space.mutate(arch, 1) != arch


@pytest.mark.parametrize(
    "text, message",
    [
        ("|nor_conv_3x3~0|+|none~0|none~1|", "3 '\\+'-separated"),
        ("|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|", "unknown op 'conv'"),
        ("|none~1|+|none~0|none~1|+|none~0|none~1|none~2|", "should read 'op~0'"),
        ("|none~0|+|none~0|+|none~0|none~1|none~2|", "2 incoming edges"),
        ("none~0|+|none~0|none~1|+|none~0|none~1|none~2|", "must look like"),
    ],
)
def test_bad_arch_strings_are_rejected_clearly(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        NB201Architecture.from_arch_str(text)


def test_bad_architectures_and_tokens(space: NB201Space) -> None:
    with pytest.raises(ValueError, match="6 edges"):
        NB201Architecture(("none",) * 5)
    with pytest.raises(ValueError, match="edge 1->2: unknown op 'conv3'"):
        NB201Architecture(("none", "none", "conv3", "none", "none", "none"))
    with pytest.raises(InvalidTokenError, match="edge0->1"):
        space.decode([5, 0, 0, 0, 0, 0])
    with pytest.raises(InvalidTokenError, match="expected 6 tokens"):
        space.decode([0] * 5)


# ---------------------------------------------------------------------------------------- the table
def test_packaged_table_matches_csv(table: NB201Table, csv_rows: list[dict[str, str]]) -> None:
    assert len(csv_rows) == 15625
    rng = np.random.default_rng(0)
    for i in [0, 6111, 13714, 15624, *rng.choice(15625, size=300, replace=False).tolist()]:
        expected, row = csv_rows[i], table.row(i)
        assert int(expected["index"]) == row["index"] == i
        assert row["arch_str"] == expected["arch_str"]
        assert row["iso_class_id"] == int(expected["iso_class_id"])
        for name, value in row.items():
            if "_acc_" in name:
                assert value == float(expected[name]), (i, name)  # accuracies are stored exactly
            elif name in FLOAT32_COLUMNS:
                assert value == pytest.approx(float(expected[name]), abs=FLOAT32_COLUMNS[name]), (i, name)
            elif name.startswith(("params_", "flops_")):
                kind, dataset = name.split("_", 1)
                assert value == round(float(expected[f"{kind}_M_{dataset}"]) * 1e6), (i, name)


def test_optima_match_csv_and_paper(table: NB201Table, csv_rows: list[dict[str, str]]) -> None:
    test = table.optimum("cifar10", "test")
    assert test.column == "cifar10_test_acc_200ep"
    assert test.value == pytest.approx(94.3733, abs=1e-4) and test.indices == (6111, 13714)
    valid = table.optimum("cifar10-valid", "valid")
    assert valid.value == pytest.approx(91.6067, abs=1e-4) and valid.indices == (6111,)
    assert valid.fraction == pytest.approx(0.916067, abs=1e-6)
    csv_test = np.array([float(r["cifar10_test_acc_200ep"]) for r in csv_rows])
    assert csv_test.max() == test.value and tuple(np.flatnonzero(csv_test == csv_test.max())) == test.indices
    assert table.arch_str(6111) == BEST_TEST
    with pytest.raises(ValueError, match="cifar100_valid_acc_200ep"):
        table.optimum("cifar100", "valid", 200)


def test_table_is_loaded_once_and_read_only(table: NB201Table) -> None:
    assert NB201Table.load() is table
    with pytest.raises(ValueError):
        table.column("cifar10_test_acc_200ep")[0] = 100.0
    with pytest.raises(IndexError):
        table.row(15625)
    assert TABLE_PATH.stat().st_size < 1.5e6


def test_corrupt_or_missing_table_errors_name_the_file(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip file at all")
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(TABLE_PATH.read_bytes()[: TABLE_PATH.stat().st_size // 2])
    for path in (garbage, truncated):
        with pytest.raises(TableError, match=f"corrupt NB201 table .*{path.name}"):
            NB201Table.load(path)
    with pytest.raises(TableError, match="not found: .*missing.npz"):
        NB201Table.load(tmp_path / "missing.npz")
    partial = tmp_path / "partial.npz"
    with np.load(TABLE_PATH) as npz:
        np.savez(partial, **{k: npz[k] for k in npz.files if k != "cifar10_test_acc_200ep"})
    with pytest.raises(TableError, match="partial.npz lacks columns \\['cifar10_test_acc_200ep'\\]"):
        NB201Table.load(partial)
    with pytest.raises(TableError, match="garbage.npz"):
        TabularEvaluator(table_path=garbage)
    assert issubclass(TableError, DatasetError)  # safe_evaluate re-raises setup problems instead of failing children


# ---------------------------------------------------------------------------------------- the evaluator
def test_reward_is_validation_and_test_only_in_extra(table: NB201Table) -> None:
    arch = NB201Architecture.from_arch_str(BEST_TEST)
    start = time.perf_counter()
    result = TabularEvaluator().evaluate(arch, checkpoint_path="/nonexistent/ignored")
    around = time.perf_counter() - start
    assert result.status is Status.OK
    assert result.metric == pytest.approx(0.916067) and result.reward == result.metric
    assert result.extra["test_accuracy"] == pytest.approx(0.943733, abs=1e-6)
    assert result.extra["cifar10valid_test_accuracy"] == table.row(6111)["cifar10valid_test_acc_200ep"] / 100
    assert result.extra["nb201_index"] == 6111
    assert result.extra["simulated_train_time_s"] == pytest.approx(table.row(6111)["cifar10valid_train_time_200ep_s"])
    assert result.params == table.row(6111)["params_cifar10"] == 1073466  # ~1.073 M, as in the shared README
    assert result.flops == table.row(6111)["flops_cifar10"]
    # the look-up's own measured time, not the simulated training time (thousands of seconds) nor unset
    assert 0 < result.wall_time_s <= around
    assert 0.0 <= result.metric <= 1.0 and 0.0 <= result.extra["test_accuracy"] <= 1.0
    cubed = TabularEvaluator(reward_shaping="cube").evaluate(arch)
    assert cubed.metric == result.metric and cubed.reward == pytest.approx(result.metric**3)


def test_low_fidelity_and_other_datasets(table: NB201Table) -> None:
    arch = NB201Architecture.from_arch_str(BEST_TEST)
    row = table.row(6111)
    short = TabularEvaluator(fidelity=12).evaluate(arch)
    assert short.metric == row["cifar10valid_valid_acc_12ep"] / 100
    assert short.extra["simulated_train_time_s"] == pytest.approx(12 * row["cifar10valid_train_time_per_epoch_s"])
    c10 = TabularEvaluator("cifar10").evaluate(arch)
    assert c10.metric == row["cifar10valid_valid_acc_200ep"] / 100  # cifar10 has no validation column of its own
    assert c10.extra["test_accuracy"] == row["cifar10_test_acc_200ep"] / 100
    c100 = TabularEvaluator("cifar100", fidelity=12).evaluate(arch)
    assert c100.metric == row["cifar100_valid_acc_12ep"] / 100
    assert c100.extra["test_accuracy"] == row["cifar100_test_acc_200ep"] / 100
    assert c100.params == row["params_cifar100"]
    in16 = TabularEvaluator("ImageNet16-120", fidelity=12).evaluate(arch)
    assert in16.metric == row["imagenet16_120_valid_acc_12ep"] / 100 and in16.flops == row["flops_imagenet16_120"]


@pytest.mark.parametrize(
    "dataset, column", [("cifar100", "cifar100_valid_acc_200ep"), ("ImageNet16-120", "imagenet16_120_valid_acc_200ep")]
)
def test_missing_200_epoch_validation_errors_clearly(dataset: str, column: str) -> None:
    with pytest.raises(ValueError, match=f"no validation column '{column}'.*fidelity=12"):
        TabularEvaluator(dataset, fidelity=200)


def test_bad_evaluator_arguments(space: NB201Space) -> None:
    with pytest.raises(ValueError, match="unknown NB201 dataset 'cifar-10'"):
        TabularEvaluator("cifar-10")
    with pytest.raises(ValueError, match="fidelity must be one of"):
        TabularEvaluator(fidelity=50)
    with pytest.raises(ValueError, match="unknown reward shaping"):
        TabularEvaluator(reward_shaping="log")
    with pytest.raises(ValueError, match="noise"):
        TabularEvaluator(noise=-0.1)


def test_determinism_pickling_and_fingerprint(space: NB201Space) -> None:
    archs = [space.sample(seed) for seed in range(20)]
    evaluator = TabularEvaluator(fidelity=12)

    def scores(ev: TabularEvaluator) -> list[tuple]:
        return [(r.reward, r.metric, sorted(r.extra.items())) for r in map(ev.evaluate, archs)]

    assert scores(evaluator) == scores(TabularEvaluator(fidelity=12)) == scores(pickle.loads(pickle.dumps(evaluator)))
    assert evaluator.config() == {
        "dataset": "cifar10-valid", "fidelity": 12, "reward_shaping": "identity", "noise": 0.0, "noise_seed": 0
    }
    variants = ({}, {"fidelity": 12}, {"dataset": "cifar10"}, {"reward_shaping": "cube"})
    fingerprints = {TabularEvaluator(**kw).fingerprint() for kw in variants}
    assert len(fingerprints) == 4
    noisy = TabularEvaluator(noise=0.01, noise_seed=1)
    assert scores(noisy) == scores(TabularEvaluator(noise=0.01, noise_seed=1))
    assert scores(noisy) != scores(TabularEvaluator(noise=0.01, noise_seed=2))
    result = noisy.evaluate(archs[0])
    assert result.metric != result.extra["noise_free_metric"] and 0.0 <= result.metric <= 1.0
