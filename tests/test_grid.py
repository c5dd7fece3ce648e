"""Grid search: the documented grids, no repeats, a seeded order, and a search that ends when the grid does."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch

from agents.grid import CNN_SKIP_PATTERNS, GridSearchAgent, grid_points
from agents.registry import AGENTS, make_agent
from agents.run_dir import RunDir, SearchConfig
from agents.search import Search
from nas_cli.main import main
from nas_env.spaces import CNNSpace, RNNCellSpace
from nas_env.spaces.nb201 import NB201Space
from nas_env.store import ResultStore


def test_grid_is_registered() -> None:
    assert AGENTS["grid"] is GridSearchAgent


@pytest.mark.parametrize(
    "space, size",
    [(CNNSpace(6), 4 * 4 * 4 * len(CNN_SKIP_PATTERNS)), (CNNSpace(5, predict_strides=True), 4 * 4 * 9 * 4 * 4),
     (CNNSpace(1), 64), (NB201Space(), 15625), (RNNCellSpace(), 8 * 8 * 8 * 3)],
    ids=["cnn", "cnn-strides", "cnn-1-layer", "nb201", "ptb"],
)
def test_grids_have_their_documented_size_and_no_repeats(space, size: int) -> None:
    points = grid_points(space)
    assert len(points) == size == len(set(points))
    keys = {space.key(space.decode(t)) for t in points}
    assert len(keys) == size


def test_cnn_grid_shares_one_choice_per_token_kind() -> None:
    space = CNNSpace(4)
    for tokens in grid_points(space)[:: 17]:
        arch = space.decode(tokens)
        assert len({(l.filter_height, l.filter_width, l.num_filters) for l in arch.layers}) == 1
        assert tuple(l.inputs for l in arch.layers) in {tuple(p(i) for i in range(4)) for p in CNN_SKIP_PATTERNS.values()}


def test_the_agent_walks_the_grid_once_then_returns_nothing() -> None:
    space = CNNSpace(1)
    agent = make_agent("grid", space, seed=3)
    seen = []
    while batch := agent.ask(10):
        seen += [p.tokens for p in batch]
        for p in batch:
            agent.tell(p, 0.5)
    assert len(seen) == 64 == len(set(seen)) and set(seen) == set(grid_points(space))
    assert agent.ask(5) == [] and agent.remaining == 0
    other = [p.tokens for p in make_agent("grid", space, seed=4).ask(64)]
    assert other != seen and set(other) == set(seen)  # the seed orders the grid
    fixed = [p.tokens for p in make_agent("grid", space, seed=4, order="fixed").ask(64)]
    assert fixed == grid_points(space)


def test_state_dict_resumes_the_walk() -> None:
    space = NB201Space()
    agent = make_agent("grid", space, seed=1)
    first = agent.ask(7)
    buffer = io.BytesIO()
    torch.save(agent.state_dict(), buffer)
    clone = make_agent("grid", space, seed=1)
    clone.load_state_dict(torch.load(io.BytesIO(buffer.getvalue()), weights_only=True))
    assert [p.tokens for p in clone.ask(5)] == [p.tokens for p in agent.ask(5)]
    assert not {p.tokens for p in first} & {p.tokens for p in agent.ask(100)}


def test_a_search_ends_when_the_grid_is_exhausted(tmp_path: Path) -> None:
    log = tmp_path / "trained.jsonl"
    config = SearchConfig(env_id="NAS-Synthetic-v0", env_kwargs={"num_layers": 1, "log_path": str(log)},
                          agent="grid", budget=1000, executor={"executor": "inline", "max_in_flight": 4})
    search = Search(tmp_path / "run", config)
    try:
        summary = search.run()
    finally:
        search.close()
    assert summary.evaluations == 64 and summary.exhausted and summary.finished
    assert len(log.read_text().splitlines()) == 64  # every point trained once
    with ResultStore(RunDir(tmp_path / "run").store_path) as store:
        assert len({r.arch_key for r in store.told()}) == 64
    # resuming an exhausted grid ends at once, finished
    search = Search(tmp_path / "run", config)
    try:
        assert search.run().finished
    finally:
        search.close()
    assert len(log.read_text().splitlines()) == 64


def test_nas_search_with_the_grid_agent_exits_0_when_exhausted(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(["search", "--env", "NAS-Synthetic-v0", "--layers", "1", "--agent", "grid", "--budget", "500",
                 "--executor", "inline", "--parallel", "8", "--run-dir", str(tmp_path / "run"), "--no-progress"])
    assert code == 0
    assert "64/500 evaluations, finished" in capsys.readouterr().out


def test_a_large_space_without_a_grid_is_refused_at_once() -> None:
    class Other(CNNSpace):
        name = "other"

    with pytest.raises(ValueError, match="no grid for the 'other' space.*too many"):
        GridSearchAgent(Other(6))
    assert len(GridSearchAgent(Other(1)).grid()) == 64  # small: every token combination
    assert np.all(np.array(grid_points(NB201Space())[0]) == 0)
