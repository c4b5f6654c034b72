"""gptlib: a small GPT library written from scratch for the GPT textbook.

Each module holds one concept (the module map is in chapter 5.2); the names below are the classes
and loaders a reader reaches for most. Functions named like their module (`generate`, `train`)
are not re-exported, so `gptlib.generate` and `gptlib.train` stay the modules. Importing the
package has no side effects: nothing is printed, downloaded or configured.
"""

__version__ = "0.1.0"  # before the imports: gptlib.checkpoint records it in every checkpoint

from gptlib.bpe import BPETokenizer  # noqa: E402
from gptlib.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from gptlib.device import pick_device, set_seed  # noqa: E402
from gptlib.kv_cache import KVCache  # noqa: E402
from gptlib.model import GPT, GPTConfig  # noqa: E402
from gptlib.tokenizer import CharTokenizer, load_tokenizer  # noqa: E402
from gptlib.train import TrainConfig  # noqa: E402

__all__ = [
    "BPETokenizer", "CharTokenizer", "GPT", "GPTConfig", "KVCache", "TrainConfig",
    "load_checkpoint", "load_tokenizer", "pick_device", "save_checkpoint", "set_seed",
]
