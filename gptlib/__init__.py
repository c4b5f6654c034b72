"""gptlib: a small GPT library written from scratch for the GPT textbook.

Each module holds one concept (the module map is in chapter 5.2); the names below are the ones a
reader reaches for most. Functions named like their module (`generate`, `train`) are not
re-exported, so `gptlib.generate` and `gptlib.train` stay the modules. Importing the package has
no side effects: nothing is printed, downloaded or configured.
"""

from gptlib._version import __version__
from gptlib.bpe import BPETokenizer
from gptlib.checkpoint import load_checkpoint, save_checkpoint
from gptlib.corpus import load_text, shakespeare_text
from gptlib.data import get_batch, train_val_split
from gptlib.device import pick_device, set_seed
from gptlib.generate import SamplingConfig, stream_text
from gptlib.kv_cache import KVCache
from gptlib.model import GPT, GPTConfig, evaluating
from gptlib.tokenizer import CharTokenizer, load_tokenizer
from gptlib.train import TrainConfig, train_step

__all__ = [
    "__version__",
    # text and tokens
    "shakespeare_text",
    "load_text",
    "CharTokenizer",
    "BPETokenizer",
    "load_tokenizer",
    "train_val_split",
    "get_batch",
    # the model
    "GPT",
    "GPTConfig",
    "KVCache",
    "evaluating",
    # sampling (the function `generate` stays the module's name)
    "SamplingConfig",
    "stream_text",
    # training and saving
    "TrainConfig",
    "train_step",
    "save_checkpoint",
    "load_checkpoint",
    "pick_device",
    "set_seed",
]
