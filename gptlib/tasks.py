"""Task datasets for chapter 6, derived from the corpus text by rules, never typed in by hand.

Every builder is a pure function of text and a seed, so tests run on small synthetic plays and
the book runs the same code on ``gptlib.corpus.shakespeare_works()``. ``parse_speeches`` cuts a
play into ``Speech`` objects; ``passage_examples`` (passage -> work, or genre by the First
Folio's groups in ``GENRES``: Heminges and Condell, eds., 1623, "A Catalogue of the severall
Comedies, Histories, and Tragedies"), ``qa_examples`` (who says a line, which play, what line
follows), ``modernisation_examples`` (Early Modern -> Modern English by a rule table) and
``retrieval_set`` (a speech -> the same speaker's other speeches) build datasets;
``split_examples`` splits them with a seed, by group, holding out whole works or rules, and
``validation_works`` names the works the book's model never saw in training.

Left out on purpose: dialogue and preference data, any hand-written example, any download.
"""

from __future__ import annotations

import random
import re
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import accumulate

# "ACT I.", "Act 1.", "ACT FIRST", "Scene 2. Paris.", "SCENE: Venice" (the end of the list of
# persons), and in capitals only "PROLOGUE.", "THE PROLOGUE", "EPILOGUE", "INDUCTION", "THE END"
_HEADING = re.compile(
    r"(?i:^(?:ACT|SCENE)\s*(?:[IVX]+\b|\d|FIRST|SECOND|THIRD|FOURTH|FIFTH"
    r"|[.:,]|$))|^(?:THE\s+)?(?:INDUCTION|PROLOGUE|EPILOGUE|END)\.?$|^FINIS\.?$"
)
# one to five capitalised words (or "of", "and", ...), an optional leading number ("1 Clown.")
_NAME = re.compile(r"^(?:\d+ )?[A-Z][A-Za-z'-]+\.?(?: (?:[A-Z][A-Za-z'-]*\.?|of|and|the|de))*$")
_NOT_A_NAME = re.compile(r"^(?:[IVXL]+|SONG)\.?$", re.I)  # stanza numbers and song titles
_INLINE_DIRECTION = re.compile(r"\s*\[[^\]}]*[\]}]|\s*\[.*$")


@dataclass(frozen=True)
class Speech:
    """One speech: ``index`` counts speeches within ``work`` from 0; ``text`` keeps its lines."""

    work: str
    index: int
    speaker: str
    text: str


@dataclass(frozen=True)
class Example:
    """A text -> target pair; ``group`` keeps related examples in one split, ``tags`` say why."""

    text: str
    target: str
    work: str
    group: str
    tags: tuple[str, ...] = ()


def _clean_lines(lines: list[str]) -> list[str | None]:
    """Stage directions -> "" (a paragraph break), headings -> None (the end of any speech)."""
    out: list[str | None] = []
    in_direction = False  # inside a stage direction that spans lines
    for line in lines:
        s = line.strip()
        if in_direction or s.startswith("["):
            # a direction ends at its bracket ("}" is a typo in a few plays) or at a blank line
            in_direction = bool(s) and not any(c in s for c in "]}")
            out.append("")
        elif _HEADING.match(s):
            out.append(None)
        else:
            out.append(_INLINE_DIRECTION.sub("", s).strip())
    return out


def _is_speaker(clean: list[str | None], i: int) -> bool:
    """A name alone after a paragraph break, then its speech (after at most one blank line)."""
    line = clean[i]
    if not (
        line
        and clean[i - 1] in ("", None)
        and _NAME.match(line)
        and len(line.split()) <= 5
        and (line.endswith(".") or line.isupper())
        and not _NOT_A_NAME.match(line)
    ):
        return False
    after = clean[i + 1 : i + 3]
    if after[:1] == [""] and line.endswith("."):  # "CHORUS.", a blank line, the speech
        return len(after) == 2 and bool(after[1]) and not _NAME.match(after[1])
    return bool(after and after[0])


def parse_speeches(text: str, work: str = "") -> list[Speech]:
    """Split a play into speeches; stage directions, headings and the list of persons are dropped.

    A speaker line stands alone after a blank line: "COUNTESS.", "Ham.", or "THESEUS" (one play
    has no full stops); its speech follows at once or after one blank line ("CHORUS."). Stage
    directions sit in square brackets; headings start with ACT or SCENE (or are PROLOGUE, THE
    END, ...). Everything before the first heading (title, list of persons) is skipped.

    >>> play = "PERSONS.\\nKING.\\n\\nACT I.\\n\\n[Enter KING.]\\n\\nKING.\\nWho's there? [Knocks.]"
    >>> [(s.speaker, s.text) for s in parse_speeches(play + "\\n\\nFOOL.\\nNot I.\\nNor he.")]
    [('KING', "Who's there?"), ('FOOL', 'Not I.\\nNor he.')]

    Args:
        text: one work, as in ``gptlib.corpus.shakespeare_works()``.
        work: the name stored in each speech.
    Returns:
        the speeches in order; [] for a text without act or scene headings (a poem).
    """
    lines = text.split("\n")
    start = next((i for i, s in enumerate(lines) if _HEADING.match(s.strip())), None)
    if start is None:
        return []
    clean = [None, *_clean_lines(lines[start:]), None]  # as if headings stood around the text
    speeches: list[Speech] = []
    speaker, body = None, []
    for i in range(1, len(clean)):
        if clean[i] is None or _is_speaker(clean, i):  # a speech ends, another may begin
            if speaker and body:
                speeches.append(Speech(work, len(speeches), speaker, "\n".join(body)))
            speaker, body = (clean[i] or "").rstrip(".") or None, []
        elif clean[i] and speaker:
            body.append(clean[i])
    return speeches


# work -> group in the First Folio's catalogue, in its order. Troilus and Cressida is missing
# from the catalogue but printed, as "The Tragedie of Troylus and Cressida", between histories and
# tragedies. Pericles entered only the Third Folio (1664): no group rather than a guessed one.
GENRES: dict[str, str | None] = {
    work: group
    for group, works in {
        "comedy": "tempest two_gentlemen_of_verona merry_wives_of_windsor measure_for_measure "
        "comedy_of_errors much_ado_about_nothing loves_labours_lost midsummer_nights_dream "
        "merchant_of_venice as_you_like_it taming_of_the_shrew alls_well_that_ends_well "
        "twelfth_night winters_tale",
        "history": "john richard_ii henry_iv_part_1 henry_iv_part_2 henry_v henry_vi_part_1 "
        "henry_vi_part_2 henry_vi_part_3 richard_iii henry_viii",
        "tragedy": "troilus_and_cressida coriolanus tragedy_of_titus_andronicus romeo_and_juliet "
        "timon_of_athens julius_caesar macbeth hamlet lear othello antony_and_cleopatra "
        "cymbeline",
        "poem": "sonnets lovers_complaint passionate_pilgrim phoenix_and_the_turtle "
        "rape_of_lucrece",
    }.items()
    for work in works.split()
} | {"pericles": None}


def validation_works(
    works: dict[str, str], val_fraction: float = 0.1, text: str | None = None
) -> list[str]:
    """Works lying wholly in the last ``val_fraction`` of the joined corpus (by characters).

    ``works`` is ``{name: text}`` in corpus order; ``text``, if given, must be their join with
    "\\n". The book's model trained on the first 90 % of ``shakespeare_text()``: it never saw these.

    >>> validation_works({"a": "x" * 8 + "\\n", "b": "y\\n"}, val_fraction=0.2)
    ['b']
    """
    joined = "\n".join(works.values())  # as gptlib.corpus joins them
    if text is not None and text != joined:
        raise ValueError(
            "text is not the works joined in the given order; pass the works in "
            "corpus order, as gptlib.corpus.shakespeare_works() returns them"
        )
    cut = int(len(joined) * (1.0 - val_fraction))  # the first character of the validation part
    starts = accumulate([len(t) + 1 for t in works.values()], initial=0)  # each work and a "\n"
    return [name for name, start in zip(works, starts, strict=False) if start >= cut]


def split_examples(
    examples: list[Example],
    seed: int = 0,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    test_works: tuple[str, ...] = (),
    test_tags: tuple[str, ...] = (),
) -> dict[str, list[Example]]:
    """Seeded train/dev/test split by ``group``; held-out works and tags all go to test.

    >>> ex = [Example(str(i), "", "w" if i < 6 else "v", f"g{i}") for i in range(10)]
    >>> {k: len(v) for k, v in split_examples(ex, test_works=("v",)).items()}
    {'train': 5, 'dev': 1, 'test': 4}

    Returns:
        ``{"train", "dev", "test"}`` -> examples in input order. Held-out examples go to test;
        the other examples of a group all land in one split.
    """
    held = {id(e) for e in examples if e.work in test_works or set(e.tags) & set(test_tags)}
    groups = list(dict.fromkeys(e.group for e in examples if id(e) not in held))
    random.Random(seed).shuffle(groups)
    n_train, n_dev = round(fractions[0] * len(groups)), round(fractions[1] * len(groups))
    where = {
        g: "train" if k < n_train else "dev" if k < n_train + n_dev else "test"
        for k, g in enumerate(groups)
    }
    out: dict[str, list[Example]] = {"train": [], "dev": [], "test": []}
    for e in examples:
        out["test" if id(e) in held else where[e.group]].append(e)
    return out


def passage_examples(
    speeches: list[Speech],
    label: str = "work",
    n_lines: int = 8,
    max_per_work: int | None = None,
    seed: int = 0,
) -> list[Example]:
    """Passages of ``n_lines`` consecutive speech lines, labelled by work or by First Folio genre.

    Args:
        label: "work" (the work's name) or "genre" (``GENRES``; works without one are skipped).
        max_per_work: keep at most this many passages of each work, chosen with ``seed``.
    """
    if label not in ("work", "genre"):
        raise ValueError(f"label must be 'work' or 'genre', got {label!r}")
    lines: dict[str, list[str]] = defaultdict(list)
    for s in speeches:
        lines[s.work].extend(s.text.split("\n"))
    rng, out = random.Random(seed), []
    for work, ls in lines.items():
        target = work if label == "work" else GENRES.get(work)
        if target is None:
            continue
        chunks = [ls[k : k + n_lines] for k in range(0, len(ls) - n_lines + 1, n_lines)]
        keep = range(len(chunks))
        if max_per_work is not None:
            keep = sorted(rng.sample(keep, min(max_per_work, len(chunks))))
        out += [
            Example("\n".join(chunks[k]), target, work, f"{work}:{k}", (f"label:{label}",))
            for k in keep
        ]
    return out


def qa_examples(speeches: list[Speech], seed: int = 0, min_words: int = 4) -> list[Example]:
    """Three questions about one line of each speech: who says it, which play, what follows.

    The line is drawn with ``seed`` among those of ``min_words`` words or more that occur once in
    all the speeches (a repeated line has no single answer). Tags: "qa:who", "qa:work", "qa:next"
    (when the line is not the speech's last).
    """
    counts = Counter(line for s in speeches for line in s.text.split("\n"))
    rng, out = random.Random(seed), []
    for s in speeches:
        ls = s.text.split("\n")
        ok = [k for k, line in enumerate(ls) if len(line.split()) >= min_words and counts[line] < 2]
        if not ok:
            continue
        k = rng.choice(ok)
        asks = [
            ("who", f'Who says: "{ls[k]}"', s.speaker),
            ("work", f'Which play has the line: "{ls[k]}"', s.work.replace("_", " ")),
            ("next", f'What line follows: "{ls[k]}"', ls[k + 1] if k + 1 < len(ls) else ""),
        ]
        out += [
            Example(q, a, s.work, f"{s.work}:{s.index}", (f"qa:{tag}",)) for tag, q, a in asks if a
        ]
    return out


# The rule table, Early Modern -> Modern English (rule name = the old word, unless noted):
#   pronouns   thou, ye -> you; thee -> you; thy -> your; thyself -> yourself;
#              thine -> your before a word ("thine own"), yours otherwise ("'tis thine")
#   verbs      hath -> has; doth -> does
#   thou-verb  art, hast, wilt, dost, ... -> are, have, will, do, ... next to "thou" only
#              ("thou art", "art thou"; "art" alone is usually the noun)
#   -est       a verb next to "thou" loses -est or -'st: "thou speakest" -> "you speak"
#   -eth       a lower-case word in -eth takes -s or -es: "speaketh" -> "speaks"
#   others     'tis, 'twas -> it is, it was; oft -> often; hither, thither, whither -> here,
#              there, where; wherefore -> why
# The two suffix rules keep a change only when the new word occurs in the text's vocabulary;
# of several candidates ("lov'st": "love" or "lov") the most frequent wins.
WORD_RULES = {
    "thou": "you",
    "thee": "you",
    "thy": "your",
    "thine": "yours",
    "thyself": "yourself",
    "ye": "you",
    "hath": "has",
    "doth": "does",
    "'tis": "it is",
    "'twas": "it was",
    "oft": "often",
    "hither": "here",
    "thither": "there",
    "whither": "where",
    "wherefore": "why",
}
THOU_VERBS = {
    "art": "are",
    "hast": "have",
    "wast": "were",
    "wert": "were",
    "wilt": "will",
    "shalt": "shall",
    "dost": "do",
    "doest": "do",
    "didst": "did",
    "canst": "can",
    "couldst": "could",
    "wouldst": "would",
    "shouldst": "should",
    "hadst": "had",
    "mayst": "may",
    "beest": "are",
    "be'st": "are",
}
_ETH_EXCEPTIONS = re.compile(r"^(?:teeth|seeth|\w+tieth)$")  # "thirtieth" is an ordinal


def _modern_form(word: str, rule: str, vocabulary: Mapping[str, int]) -> str | None:
    """The modern form a suffix rule gives ``word``, if the vocabulary knows it."""
    stem = word[:-3]  # -eth, -est and -'st are three characters each
    if rule == "-eth":  # "speaketh" -> "speaks", "loveth" -> "loves", "passeth" -> "passes"
        sibilant = stem.endswith(("s", "x", "z", "ch", "sh"))
        tries = [stem + "es"] if sibilant else [stem + "s", stem + "es"]
        return next((t for t in tries if vocabulary.get(t, 0)), None)
    # -est: "lov'st" -> "love", "knowest" -> "know", "gettest" -> "get", "liest" -> "lie"
    tries = [
        t
        for t in (stem + "e", stem, stem[:-1] if stem[-1:] == stem[-2:-1] else stem)
        if len(t) >= 3
    ]
    best = max(tries, key=lambda t: vocabulary.get(t, 0), default="")
    return best if vocabulary.get(best, 0) else None


def _change(
    words: list[str], spaces: list[bool], i: int, vocabulary: Mapping[str, int]
) -> tuple[str, str | None]:
    """(rule, modern form) for words[i], or ("", None); spaces[i]: blanks only up to i + 1."""
    w = words[i].lower()
    by_thou = (i > 0 and spaces[i - 1] and words[i - 1].lower() == "thou") or (
        i + 1 < len(words) and spaces[i] and words[i + 1].lower() == "thou"
    )
    if w in THOU_VERBS and by_thou:
        return "thou-verb", THOU_VERBS[w]
    if w == "thine":
        return w, "your" if i + 1 < len(words) and spaces[i] else "yours"
    if w in WORD_RULES:
        return w, WORD_RULES[w]
    if by_thou and w.endswith(("est", "'st")):
        return "-est", _modern_form(w, "-est", vocabulary)
    if words[i].islower() and w.endswith("eth") and len(w) > 4 and not _ETH_EXCEPTIONS.match(w):
        return "-eth", _modern_form(w, "-eth", vocabulary)
    return "", None


def modernise(line: str, vocabulary: Mapping[str, int]) -> tuple[str, list[tuple[str, str, str]]]:
    """Apply the rule table to a line; returns the new line and its (rule, old, new) changes.

    >>> modernise("Thou art thine own; she speaketh, art thou?", {"speaks": 1})[0]
    'You are your own; she speaks, are you?'
    """
    parts = re.split(r"([A-Za-z']+)", line)  # separators at even, words at odd positions
    words, spaces = parts[1::2], [not sep.strip() for sep in parts[2::2]]
    changes = []
    for i, word in enumerate(words):
        rule, new = _change(words, spaces, i, vocabulary)
        if new is not None:
            capital = word.lstrip("'")[:1].isupper()  # "'Tis" -> "It is"
            parts[2 * i + 1] = new[0].upper() + new[1:] if capital else new
            changes.append((rule, word, parts[2 * i + 1]))
    return "".join(parts), changes


def modernisation_examples(
    speeches: list[Speech], vocabulary: Mapping[str, int] | None = None
) -> list[Example]:
    """Every speech line that some rule changes, as (Early Modern line, Modern line).

    ``vocabulary`` (lower-case word -> count) defaults to the words of ``speeches`` (Shakespeare
    writes "speaks" as well as "speaketh"). Tags "rule:<name>", "word:<old word>" name each
    change, so ``split_examples(..., test_tags=("rule:hath",))`` holds a rule out of training.
    """
    if vocabulary is None:
        vocabulary = Counter(re.findall(r"[a-z']+", "\n".join(s.text for s in speeches).lower()))
    out = []
    for s in speeches:
        for line in s.text.split("\n"):
            new, changes = modernise(line, vocabulary)
            if changes:
                tags = {t for r, o, _ in changes for t in (f"rule:{r}", f"word:{o.lower()}")}
                out.append(Example(line, new, s.work, f"{s.work}:{s.index}", tuple(sorted(tags))))
    return out


@dataclass(frozen=True)
class RetrievalSet:
    """Speeches to index; query ``queries[i]`` (an index into ``documents``) has the relevant
    documents ``relevant[i]``. Rank without the query itself (``CosineIndex.search(exclude=)``)."""

    documents: list[Speech]
    queries: list[int]
    relevant: list[set[int]]


def retrieval_set(
    speeches: list[Speech], min_words: int = 8, max_queries: int | None = None, seed: int = 0
) -> RetrievalSet:
    """Speeches of ``min_words`` words or more; relevant = the same speaker in the same work.

    Queries: the speeches with a relevant one; at most ``max_queries``, drawn with ``seed``.
    """
    docs = [s for s in speeches if len(s.text.split()) >= min_words]
    by_voice: dict[tuple[str, str], list[int]] = defaultdict(list)
    for j, s in enumerate(docs):
        by_voice[(s.work, s.speaker)].append(j)
    queries = [j for j, s in enumerate(docs) if len(by_voice[(s.work, s.speaker)]) > 1]
    if max_queries is not None and len(queries) > max_queries:
        queries = sorted(random.Random(seed).sample(queries, max_queries))
    relevant = [set(by_voice[(docs[q].work, docs[q].speaker)]) - {q} for q in queries]
    return RetrievalSet(docs, queries, relevant)
