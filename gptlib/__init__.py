"""gptlib: a small GPT library written from scratch for the GPT textbook.

Each module holds one concept (see the module map in chapter 5.2). Importing the package has no
side effects: nothing is printed, downloaded or configured.
"""

__version__ = "0.1.0"
