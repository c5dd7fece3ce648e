"""The Penn Treebank evaluator: train a language model around a searched recurrent cell and reward it
as the paper does, R = c / (validation perplexity)^2 with c = 80."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from nas_env.evaluators import Evaluator, resolve_device
from nas_env.errors import SetupError
from nas_env.lm_training import LMRecipe
from nas_env.recipe import recipe_from
from nas_env.results import EvalResult, Status
from nas_env.spaces.base import Architecture

#: named language-model recipes: the paper's epochs, and small ones that train on a CPU in seconds
LM_RECIPE_PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},  # 35 epochs over the whole training split, 200 units, bptt 35
    # ~15 s per 8-leaf cell on one CPU thread: one pass over 500,000 tokens, Adam with a warm-up and a linear
    # decay, and an adaptive softmax (the full 10,000-word one would see a third of the tokens in that time)
    "cpu-demo": {"epochs": 1, "train_tokens": 500_000, "val_tokens": 8_000, "embed_size": 64, "hidden_size": 64,
                 "batch_size": 32, "bptt": 20, "dropout": 0.0, "optimizer": "adam", "lr": 0.01, "warmup": 0.05,
                 "lr_schedule": "linear", "adaptive_softmax_cutoffs": (1000, 4000)},  # fmt: skip
    "tiny": {"epochs": 1, "train_tokens": 6_000, "val_tokens": 2_000, "embed_size": 32, "hidden_size": 32,
             "batch_size": 10, "bptt": 10},  # fmt: skip
}

def resolve_lm_recipe(recipe: Any) -> LMRecipe:
    """An :class:`LMRecipe` from a recipe, a dict of its fields or a preset name."""
    return recipe_from(recipe, LMRecipe, LM_RECIPE_PRESETS, "language-model recipe")


def reward_from_perplexity(perplexity: float, c: float = 80.0) -> float:
    """The paper's PTB reward: c / perplexity^2 (c = 80); 0 for an infinite perplexity."""
    return float(c) / float(perplexity) ** 2 if math.isfinite(perplexity) and perplexity > 0 else 0.0


def build_language_model(arch: Architecture, vocab_size: int, recipe: LMRecipe, word_rank: Any = None) -> Any:
    """The child language model of ``arch`` at the recipe's sizes: a decoder tied to the embedding when their
    sizes agree, or the recipe's adaptive softmax over ``word_rank`` (see :class:`~nas_env.lm_training.LMTensors`)."""
    from nas_env.children.rnn_cell import RNNLanguageModel

    tie = recipe.embed_size == recipe.hidden_size and not recipe.adaptive_softmax_cutoffs
    return RNNLanguageModel(arch, vocab_size, embed_size=recipe.embed_size, hidden_size=recipe.hidden_size,  # type: ignore[arg-type]
                            dropout=recipe.dropout, tie_weights=tie,
                            adaptive_softmax_cutoffs=recipe.adaptive_softmax_cutoffs, word_rank=word_rank)  # fmt: skip


#: words in the Mikolov PTB vocabulary (with <eos>): the language model's embedding and softmax size
PTB_VOCAB_SIZE = 10000


class PTBEvaluator(Evaluator):
    """Train the child language model on PTB (word level) with a training recipe; the metric is the lowest
    validation perplexity of the last ``reward_last_epochs`` epochs, the reward ``c / metric^2``."""

    def __init__(
        self,
        recipe: Any = "paper",
        data_dir: str | Path | None = None,
        device: str = "auto",
        seed: int = 0,
        reward_c: float = 80.0,
        reward_last_epochs: int = 5,
        failure_reward: float = 0.0,
        download: bool = True,
    ) -> None:
        self.recipe = resolve_lm_recipe(recipe)
        if not (isinstance(reward_c, (int, float)) and math.isfinite(reward_c) and reward_c > 0):
            raise ValueError(f"reward_c must be a positive number, got {reward_c!r}")
        if reward_last_epochs < 1:
            raise ValueError(f"reward_last_epochs must be >= 1, got {reward_last_epochs}")
        self.data_dir = None if data_dir is None else str(data_dir)
        self.device = device
        self.seed = int(seed)
        self.reward_c = float(reward_c)
        self.reward_last_epochs = int(reward_last_epochs)
        self.failure_reward = float(failure_reward)
        self.download = bool(download)

    def config(self) -> dict[str, Any]:
        return {
            "dataset": "ptb",
            "recipe": self.recipe.to_dict(),
            "seed": self.seed,
            "reward_c": self.reward_c,
            "reward_last_epochs": self.reward_last_epochs,
        }

    def prepare(self, check_device: bool = True) -> None:
        """Check the device, find PTB (downloading it once if allowed), read and verify its files, and
        check the recipe's token counts make batches; SetupError otherwise."""
        from nas_env.data.ptb import load_ptb_corpus
        from nas_env.lm_training import prepare_lm_data

        if check_device:  # not where the children run elsewhere (a SLURM driver on a login node)
            resolve_device(self.device)
        corpus = load_ptb_corpus(self.data_dir, download=self.download)
        try:
            prepare_lm_data(corpus.train, corpus.valid, corpus.vocab_size, self.recipe, device="cpu")
        except ValueError as exc:
            raise SetupError(f"the recipe does not fit Penn Treebank: {exc}; raise train_tokens/val_tokens"
                             " or lower batch_size/eval_batch_size") from None  # fmt: skip

    def data(self, device: str) -> Any:
        """The recipe's token tensors on ``device``, read once per process."""
        from nas_env.data.ptb import load_ptb_corpus
        from nas_env.data_cache import cached
        from nas_env.lm_training import prepare_lm_data

        def build() -> Any:
            corpus = load_ptb_corpus(self.data_dir, download=self.download)
            return prepare_lm_data(corpus.train, corpus.valid, corpus.vocab_size, r, device=device)

        r = self.recipe
        return cached(("ptb", self.data_dir, r.train_tokens, r.val_tokens, r.batch_size, r.eval_batch_size, device),
                      build)  # fmt: skip

    def cost(self, arch: Architecture) -> dict[str, int | None]:
        """Parameters of the child language model (built on the CPU with the recipe's sizes and PTB's 10,000-word
        vocabulary, not trained); FLOPs are not counted for language models (None)."""
        from nas_env.children.cnn import count_params

        return {"params": count_params(build_language_model(arch, PTB_VOCAB_SIZE, self.recipe)), "flops": None}

    def evaluate(self, arch: Architecture, checkpoint_path: str | Path | None = None) -> EvalResult:
        import torch

        from nas_env.children.cnn import count_params
        from nas_env.lm_training import train_language_model

        device = resolve_device(self.device)
        data = self.data(device)
        b = self.recipe
        torch.manual_seed(self.seed)
        model = build_language_model(arch, data.vocab_size, b, data.word_rank)
        params = count_params(model)
        outcome = train_language_model(model, data, b, device=device, seed=self.seed, checkpoint_path=checkpoint_path)
        common = {
            "curve": tuple(outcome.val_curve),
            "params": params,
            "wall_time_s": outcome.wall_time_s,
            "extra": {
                "metric_name": "val_perplexity",
                "epochs_done": outcome.epochs_done,
                "train_tokens_per_s": outcome.train_tokens_per_s,
                "resumed_from_epoch": outcome.resumed_from_epoch,
                "device": device,
                "torch_threads": torch.get_num_threads(),
            },
        }
        if outcome.status is not Status.OK:
            return EvalResult(status=outcome.status, reward=self.failure_reward, error=outcome.error, **common)
        perplexity = outcome.min_recent_perplexity(self.reward_last_epochs)
        return EvalResult(status=Status.OK, reward=reward_from_perplexity(perplexity, self.reward_c),
                          metric=perplexity, **common)  # fmt: skip
