"""Training language models around searched cells on the real Penn Treebank: learning, divergence,
resume, the paper's reward, and NAS-PTB-v0 end to end (tiny recipes, CPU, seconds)."""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

import nas_env  # noqa: F401 - registers the ids
from nas_env.data.paths import CorruptDatasetError, DatasetNotFoundError
from nas_env.data.ptb import PTBCorpus, load_ptb_corpus
from nas_env.errors import DeviceError, SetupError
from nas_env.lm_training import LMRecipe, prepare_lm_data, train_language_model
from nas_env.ptb_evaluator import PTBEvaluator, build_language_model, reward_from_perplexity, resolve_lm_recipe
from nas_env.results import Status
from nas_env.spaces.rnn_cell import RNNCellArchitecture, RNNCellSpace, paper_example

TANH_CELL = RNNCellArchitecture(
    nodes=(("add", "tanh"), ("add", "sigmoid"), ("elem_mult", "tanh")), inject=("add", "tanh"), cell_from=0, inject_into=0
)
#: identity activations everywhere: h grows without bound through the 15 nodes and the loss overflows
EXPLODING_CELL = RNNCellSpace(8).decode([0] * RNNCellSpace(8).num_steps)


@pytest.fixture(scope="module")
def corpus(data_root: Path) -> PTBCorpus:
    return load_ptb_corpus(data_root / "ptb")


def train(corpus: PTBCorpus, arch: RNNCellArchitecture, recipe: LMRecipe, **kwargs):
    data = prepare_lm_data(corpus.train, corpus.valid, corpus.vocab_size, recipe)
    torch.manual_seed(0)
    return train_language_model(build_language_model(arch, corpus.vocab_size, recipe, data.word_rank), data, recipe,
                                **kwargs)  # fmt: skip


def unigram_perplexity(corpus: PTBCorpus, train_tokens: int, val_tokens: int) -> float:
    """Perplexity of add-one word frequencies from the same training tokens: the bar a model of context must clear."""
    counts = np.bincount(corpus.train[:train_tokens], minlength=corpus.vocab_size) + 1.0
    p = counts / counts.sum()
    return float(np.exp(-np.mean(np.log(p[corpus.valid[:val_tokens]]))))


def test_a_searched_cell_learns_context_on_real_ptb(corpus: PTBCorpus) -> None:
    recipe = LMRecipe(epochs=3, train_tokens=30_000, val_tokens=5_000, embed_size=64, hidden_size=64, bptt=20)
    outcome = train(corpus, TANH_CELL, recipe)
    assert outcome.status is Status.OK and outcome.epochs_done == 3
    bar = unigram_perplexity(corpus, 30_000, 5_000)  # ~840; uniform guessing would be 10,000
    assert outcome.val_curve[-1] < 0.9 * bar, (outcome.val_curve, bar)
    assert outcome.val_curve[-1] < outcome.val_curve[0]
    assert outcome.train_tokens_per_s > 0


def test_an_exploding_cell_ends_diverged_not_raised(corpus: PTBCorpus) -> None:
    outcome = train(corpus, EXPLODING_CELL, resolve_lm_recipe("tiny"))
    assert outcome.status is Status.DIVERGED and "non-finite" in (outcome.error or "")


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_resume_from_a_checkpoint_equals_the_uninterrupted_run(
    corpus: PTBCorpus, tmp_path: Path, optimizer: str
) -> None:
    adam = {"optimizer": "adam", "lr": 0.003, "adaptive_softmax_cutoffs": [500, 2000]} if optimizer == "adam" else {}
    two = LMRecipe.from_dict({"epochs": 2, "train_tokens": 4_000, "val_tokens": 1_000, "embed_size": 32,
                              "hidden_size": 32, "batch_size": 10, "bptt": 10, "lr_schedule": "constant", **adam})
    straight = train(corpus, paper_example(), two)
    ckpt = tmp_path / "child.ckpt"
    first = train(corpus, paper_example(), LMRecipe.from_dict({**two.to_dict(), "epochs": 1}), checkpoint_path=ckpt)
    assert first.epochs_done == 1 and ckpt.exists()
    resumed = train(corpus, paper_example(), two, checkpoint_path=ckpt)  # a fresh model: weights come from the file
    assert resumed.resumed_from_epoch == 1
    assert resumed.val_curve == pytest.approx(straight.val_curve, rel=1e-6)
    other = LMRecipe.from_dict({**two.to_dict(), "hidden_size": 16, "embed_size": 16})
    with pytest.raises(ValueError, match="another recipe"):
        train(corpus, paper_example(), other, checkpoint_path=ckpt)


def test_evaluator_reward_is_the_papers_and_runs_are_reproducible(data_root: Path) -> None:
    evaluator = PTBEvaluator(recipe="tiny", data_dir=data_root / "ptb", device="cpu")
    first, second = evaluator.evaluate(TANH_CELL), evaluator.evaluate(TANH_CELL)
    assert first.ok and first.metric == min(first.curve) and 10 < first.metric < 10_000
    assert first.reward == pytest.approx(80.0 / first.metric**2)
    assert first.extra["metric_name"] == "val_perplexity" and first.params > 0
    assert first.curve == second.curve  # same seed, same config: the same numbers
    failed = evaluator.evaluate(EXPLODING_CELL)
    assert failed.status is Status.DIVERGED and failed.reward == evaluator.failure_reward
    assert PTBEvaluator(recipe="cpu-demo").fingerprint() != evaluator.fingerprint()
    assert reward_from_perplexity(math.inf) == 0.0


def test_bad_recipes_are_named() -> None:
    with pytest.raises(ValueError, match="unknown language-model recipe preset 'huge'"):
        PTBEvaluator(recipe="huge")
    with pytest.raises(ValueError, match="LMRecipe.bptt must be an integer >= 1"):
        LMRecipe(bptt=0)
    with pytest.raises(ValueError, match="LMRecipe field"):
        resolve_lm_recipe({"epochs": 1, "layers": 2})
    with pytest.raises(ValueError, match="LMRecipe.optimizer must be one of"):
        LMRecipe(optimizer="rmsprop")
    with pytest.raises(ValueError, match="adaptive_softmax_cutoffs must increase"):
        LMRecipe(adaptive_softmax_cutoffs=(4000, 1000))
    assert LMRecipe.from_dict(LMRecipe(adaptive_softmax_cutoffs=[10, 20]).to_dict()) == LMRecipe(
        adaptive_softmax_cutoffs=(10, 20))  # a JSON list reads back as the same recipe
    with pytest.raises(ValueError, match="reward_c"):
        PTBEvaluator(reward_c=-1)


def test_the_ptb_env_trains_a_child_at_its_terminal_step(data_root: Path) -> None:
    env = gym.make("NAS-PTB-v0", num_leaves=2, recipe="tiny", device="cpu", data_dir=str(data_root / "ptb"))
    space = env.unwrapped.space
    assert isinstance(space, RNNCellSpace) and space.num_steps == 10
    env.reset(seed=0)
    for token in space.encode(paper_example()):
        obs, reward, terminated, truncated, info = env.step(token)
    assert terminated and not truncated and info["result"].ok
    assert reward == pytest.approx(80.0 / info["result"].metric ** 2)
    assert info["architecture"] == paper_example()


def test_nas_search_on_ptb_from_the_command_line(data_root: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "nas_cli", "search", "--env", "NAS-PTB-v0", "--agent", "reinforce", "--budget", "3",
         "--recipe", "tiny", "--env-kwargs", '{"num_leaves": 2}', "--executor", "inline", "--no-progress",
         "--data-dir", str(data_root / "ptb"), "--run-dir", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "3/3 evaluations, finished" in done.stdout and "val ppl" in done.stdout


def test_prepare_checks_device_data_and_recipe_without_training(data_root: Path, tmp_path: Path) -> None:
    PTBEvaluator(recipe="tiny", data_dir=data_root / "ptb", device="cpu").prepare()
    with pytest.raises(DatasetNotFoundError, match=f"Searched: {tmp_path}") as info:
        PTBEvaluator(recipe="tiny", data_dir=tmp_path, device="cpu", download=False).prepare()
    assert "\n" not in str(info.value)
    bad = tmp_path / "ptb"
    shutil.copytree(data_root / "ptb", bad)
    (bad / "ptb.valid.txt").write_bytes((data_root / "ptb" / "ptb.valid.txt").read_bytes()[:1000])
    with pytest.raises(CorruptDatasetError, match=r"ptb\.valid\.txt: SHA256 checksum differs"):
        PTBEvaluator(recipe="tiny", data_dir=bad, device="cpu").prepare()
    with pytest.raises(SetupError, match="recipe does not fit Penn Treebank: too few tokens"):
        PTBEvaluator(recipe={"train_tokens": 2, "batch_size": 20}, data_dir=data_root / "ptb", device="cpu").prepare()
    with pytest.raises(SetupError, match=r"adaptive_softmax_cutoffs \[1000, 20000\] must stay below the 10000 words"):
        PTBEvaluator(recipe={"adaptive_softmax_cutoffs": [1000, 20000]}, data_dir=data_root / "ptb").prepare()
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="device 'cuda' requested but torch sees no CUDA device"):
            PTBEvaluator(recipe="tiny", data_dir=data_root / "ptb", device="cuda").prepare()


def test_the_cpu_demo_recipe_on_a_quarter_of_its_tokens_clears_the_unigram_bar(corpus: PTBCorpus) -> None:
    """Adam and the adaptive softmax over frequency-ranked words, as `cpu-demo` trains them (seconds here)."""
    demo = resolve_lm_recipe("cpu-demo")
    assert demo.optimizer == "adam" and demo.adaptive_softmax_cutoffs == (1000, 4000)
    recipe = LMRecipe.from_dict({**demo.to_dict(), "train_tokens": 125_000, "val_tokens": 5_000})
    data = prepare_lm_data(corpus.train, corpus.valid, corpus.vocab_size, recipe)
    assert int(data.word_rank[corpus.word_to_id["the"]]) == 0  # the most frequent word heads the softmax
    torch.manual_seed(0)
    outcome = train_language_model(build_language_model(TANH_CELL, corpus.vocab_size, recipe, data.word_rank),
                                   data, recipe)  # fmt: skip
    bar = unigram_perplexity(corpus, 125_000, 5_000)  # ~750
    assert outcome.status is Status.OK and outcome.val_curve[-1] < 0.8 * bar, (outcome.val_curve, bar)
