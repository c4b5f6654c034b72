"""gptlib: a small GPT library written from scratch for the GPT textbook.

Each module holds one concept (the module map is in chapter 5.2); the names below are the classes
and loaders a reader reaches for most. Functions named like their module (`generate`, `train`)
are not re-exported, so `gptlib.generate` and `gptlib.train` stay the modules. Importing the
package has no side effects: nothing is printed, downloaded or configured.
"""

from gptlib._version import __version__
from gptlib.bpe import BPETokenizer
from gptlib.checkpoint import load_checkpoint, save_checkpoint
from gptlib.device import pick_device, set_seed
from gptlib.kv_cache import KVCache
from gptlib.model import GPT, GPTConfig
from gptlib.tokenizer import CharTokenizer, load_tokenizer
from gptlib.train import TrainConfig

__all__ = [
    "__version__", "BPETokenizer", "CharTokenizer", "GPT", "GPTConfig", "KVCache", "TrainConfig",
    "load_checkpoint", "load_tokenizer", "pick_device", "save_checkpoint", "set_seed",
]
