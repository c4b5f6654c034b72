"""Tests of gptlib.tasks on small synthetic plays laid out like the corpus, with expectations
derived by hand, plus seeded determinism and disjoint splits. The tests marked ``corpus`` read
the real corpus from the local cache (``make setup``) and never download."""

import pytest

from gptlib import tasks
from gptlib.tasks import Example, Speech

# A play in the corpus's layout: title, list of persons, headings, stage directions on their own
# lines (one spans two lines, one is closed by a "}" typo), an inline aside, a speaker followed
# by a blank line (as "CHORUS." in Henry V), a verse line that starts with "Act" and a stanza
# number "II" that must not be read as a speaker.
PLAY = """\
THE TRAGEDY OF TESTING

by William Shakespeare



PERSONS REPRESENTED.

KING.
FOOL, his jester.
CHORUS.

SCENE: A court.



PROLOGUE.

CHORUS.

Our play is short.

ACT I.

SCENE 1. A hall.

[Enter KING and FOOL, with
Attendants.]

KING.
Thou art a fool.
Act well thy part. [Aside.] He hath no wit.

FOOL.
And thou a king.

[Exit KING.}

FOOL.
The king is gone.
II
He speaketh not.

SCENE 2. The same.

KING.
Thou art a fool.

FIRST LORD.
The end.
"""

EXPECTED = [
    ("CHORUS", "Our play is short."),
    ("KING", "Thou art a fool.\nAct well thy part. He hath no wit."),
    ("FOOL", "And thou a king."),
    ("FOOL", "The king is gone.\nII\nHe speaketh not."),
    ("KING", "Thou art a fool."),
    ("FIRST LORD", "The end."),
]

# The same layout with abbreviated mixed-case speakers, as in Hamlet and King Lear.
ABBREVIATED = (
    "Persons Represented.\n\nHam.\n\nACT I.\n\nScene I. A platform.\n\nHam.\n"
    "Who's there?\n\nHor.\nA friend.\nHe.\n"
)

SONNET = (
    "THE SONNETS\n\nby William Shakespeare\n\nI\n\nFrom fairest creatures we desire "
    "increase,\nThat thereby beauty's rose might never die,\n"
)


def speeches():
    return tasks.parse_speeches(PLAY, "hamlet")


# --- parsing --------------------------------------------------------------------------------


def test_a_play_parses_into_hand_derived_speeches():
    got = speeches()
    assert [(s.speaker, s.text) for s in got] == EXPECTED
    assert [s.index for s in got] == list(range(len(EXPECTED)))
    assert {s.work for s in got} == {"hamlet"}


def test_abbreviated_mixed_case_speakers_are_found():
    got = tasks.parse_speeches(ABBREVIATED)
    assert [(s.speaker, s.text) for s in got] == [
        ("Ham", "Who's there?"),
        ("Hor", "A friend.\nHe."),
    ]


def test_a_poem_has_no_speeches():
    assert tasks.parse_speeches(SONNET, "sonnets") == []
    assert tasks.parse_speeches("") == []


# --- genres and held-out works --------------------------------------------------------------


def test_the_folio_table_has_its_three_groups_and_the_rest():
    """First Folio: 14 comedies, 10 histories, 12 tragedies (Troilus and Cressida and Cymbeline
    included); 5 poems; Pericles, not in the Folio, has no group: 42 works."""
    groups = [tasks.GENRES[w] for w in tasks.GENRES]
    assert len(tasks.GENRES) == 42
    assert [groups.count(g) for g in ("comedy", "history", "tragedy", "poem", None)] == [
        14,
        10,
        12,
        5,
        1,
    ]
    assert tasks.GENRES["hamlet"] == "tragedy" and tasks.GENRES["henry_v"] == "history"
    assert tasks.GENRES["winters_tale"] == "comedy" and tasks.GENRES["pericles"] is None


def test_validation_works_are_those_wholly_after_the_cut():
    """Joined with "\\n": a (10 chars) + "\\n" + b (10) + "\\n" + c (10) = 32 characters. With
    val_fraction 0.4 the cut is int(32 * 0.6) = 19: b starts at 11 (before), c at 22 (after)."""
    works = {"a": "a" * 9 + "\n", "b": "b" * 9 + "\n", "c": "c" * 9 + "\n"}
    assert tasks.validation_works(works, val_fraction=0.4) == ["c"]
    assert tasks.validation_works(works, val_fraction=0.75) == ["b", "c"]  # cut at 8
    with pytest.raises(ValueError, match="corpus order"):
        tasks.validation_works(works, text="\n".join(reversed(works.values())))


# --- splits ---------------------------------------------------------------------------------


def examples(n: int = 50) -> list[Example]:
    return [
        Example(
            f"t{i}",
            "x",
            "w1" if i < 40 else "w2",
            f"g{i // 2}",
            ("rule:hath",) if i % 10 == 0 else (),
        )
        for i in range(n)
    ]


def test_splits_are_deterministic_disjoint_and_complete():
    ex = examples()
    a, b = tasks.split_examples(ex, seed=3), tasks.split_examples(ex, seed=3)
    assert a == b
    assert a != tasks.split_examples(ex, seed=4)
    groups = [{e.group for e in a[k]} for k in ("train", "dev", "test")]
    assert not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2])
    assert sorted(e.text for part in a.values() for e in part) == sorted(e.text for e in ex)
    assert [len({e.group for e in a[k]}) for k in ("train", "dev", "test")] == [20, 2, 3]


def test_held_out_works_and_tags_go_to_test_only():
    split = tasks.split_examples(examples(), seed=0, test_works=("w2",), test_tags=("rule:hath",))
    assert all(
        e.work != "w2" and "rule:hath" not in e.tags for k in ("train", "dev") for e in split[k]
    )
    held = [e for e in examples() if e.work == "w2" or "rule:hath" in e.tags]
    assert all(e in split["test"] for e in held)


# --- builders -------------------------------------------------------------------------------


def test_passages_are_consecutive_speech_lines_with_their_label():
    """The six speeches hold 1 + 2 + 1 + 3 + 1 + 1 = 9 lines: four passages of two lines."""
    by_genre = tasks.passage_examples(speeches(), label="genre", n_lines=2)
    first, second = "Our play is short.\nThou art a fool.", "Act well thy part. He hath no wit."
    assert [e.text for e in by_genre][:2] == [first, second + "\nAnd thou a king."]
    assert len(by_genre) == 4 and {e.target for e in by_genre} == {"tragedy"}
    assert {e.target for e in tasks.passage_examples(speeches(), n_lines=2)} == {"hamlet"}
    unknown = [Speech("my_play", 0, "A", "x\ny")]
    assert tasks.passage_examples(unknown, label="genre", n_lines=1) == []
    picked = tasks.passage_examples(speeches(), n_lines=2, max_per_work=2, seed=1)
    assert len(picked) == 2 and picked == tasks.passage_examples(
        speeches(), n_lines=2, max_per_work=2, seed=1
    )


def test_qa_examples_ask_who_which_play_and_what_follows():
    """Lines of four words or more that occur once: "Thou art a fool." occurs twice, so KING's
    first speech can only ask about "Act well thy part. ..."; FOOL's second speech only about
    "The king is gone." (the other lines are too short); the first has no next line in its speech,
    the second has "II"."""
    qa = tasks.qa_examples(speeches(), seed=0)
    got = [(e.tags[0], e.text, e.target) for e in qa]
    line, gone = "Act well thy part. He hath no wit.", "The king is gone."
    assert got == [
        ("qa:who", 'Who says: "Our play is short."', "CHORUS"),
        ("qa:work", 'Which play has the line: "Our play is short."', "hamlet"),
        ("qa:who", f'Who says: "{line}"', "KING"),
        ("qa:work", f'Which play has the line: "{line}"', "hamlet"),
        ("qa:who", 'Who says: "And thou a king."', "FOOL"),
        ("qa:work", 'Which play has the line: "And thou a king."', "hamlet"),
        ("qa:who", f'Who says: "{gone}"', "FOOL"),
        ("qa:work", f'Which play has the line: "{gone}"', "hamlet"),
        ("qa:next", f'What line follows: "{gone}"', "II"),
    ]
    assert qa == tasks.qa_examples(speeches(), seed=0)


@pytest.mark.parametrize(
    "old, vocabulary, new",
    [
        ("Thou art a fool.", {}, "You are a fool."),
        ("Art thou mad?", {}, "Are you mad?"),
        ("The art of war.", {}, "The art of war."),  # "art" without "thou" is the noun
        ("Is it thine? Thine own eyes.", {}, "Is it yours? Your own eyes."),
        ("He hath it, and doth keep it for thee.", {}, "He has it, and does keep it for you."),
        ("'Tis thy wit; get thee hither.", {}, "It is your wit; get you here."),
        (
            "Thou speakest well; lov'st thou me?",
            {"speak": 3, "love": 9, "lov": 0},
            "You speak well; love you me?",
        ),
        (
            "She loveth him and passeth by.",
            {"loves": 1, "lovs": 0, "passes": 2},
            "She loves him and passes by.",
        ),
        ("She goeth; his teeth; Macbeth.", {"goes": 0, "tes": 5}, "She goeth; his teeth; Macbeth."),
    ],
)
def test_modernisation_rules_by_hand(old, vocabulary, new):
    assert tasks.modernise(old, vocabulary)[0] == new


def test_modernisation_examples_carry_their_rules_and_can_hold_one_out():
    ex = tasks.modernisation_examples(speeches())
    assert [(e.text, e.target) for e in ex] == [
        ("Thou art a fool.", "You are a fool."),
        ("Act well thy part. He hath no wit.", "Act well your part. He has no wit."),
        ("And thou a king.", "And you a king."),
        ("Thou art a fool.", "You are a fool."),
    ]  # "speaketh" stays: "speaks" is not a word of this play
    assert ex[1].tags == ("rule:hath", "rule:thy", "word:hath", "word:thy")
    split = tasks.split_examples(ex, seed=0, fractions=(1.0, 0.0, 0.0), test_tags=("word:hath",))
    assert [e.text for e in split["test"]] == ["Act well thy part. He hath no wit."]
    assert len(split["train"]) == 3


def test_retrieval_relevance_is_the_same_speaker_in_the_same_work():
    docs = [
        Speech("a", 0, "KING", "one two"),
        Speech("a", 1, "FOOL", "three"),
        Speech("a", 2, "KING", "four five"),
        Speech("b", 0, "KING", "six seven"),
        Speech("a", 3, "KING", "eight nine"),
        Speech("a", 4, "KING", "ten"),
    ]
    r = tasks.retrieval_set(docs, min_words=2)
    assert [d.text for d in r.documents] == ["one two", "four five", "six seven", "eight nine"]
    assert r.queries == [0, 1, 3]  # "six seven" is KING of another work: no relevant speech
    assert r.relevant == [{1, 3}, {0, 3}, {0, 1}]
    few = tasks.retrieval_set(docs, min_words=2, max_queries=2, seed=5)
    assert len(few.queries) == 2 and set(few.queries) <= {0, 1, 3}
    assert few == tasks.retrieval_set(docs, min_words=2, max_queries=2, seed=5)


# --- the real corpus ------------------------------------------------------------------------


@pytest.mark.corpus
def test_the_real_corpus_parses_and_matches_the_genre_table():
    from gptlib.corpus import shakespeare_text, shakespeare_works

    works = shakespeare_works(download=False)
    assert set(works) == set(tasks.GENRES)
    counts = {w: len(tasks.parse_speeches(t, w)) for w, t in works.items()}
    assert all((counts[w] == 0) == (tasks.GENRES[w] == "poem") for w in works)
    assert sum(counts.values()) > 30_000
    hamlet = tasks.parse_speeches(works["hamlet"], "hamlet")
    assert (hamlet[0].speaker, hamlet[0].text) == ("Ber", "Who's there?")
    assert tasks.validation_works(works, 0.1, shakespeare_text(download=False)) == [
        "twelfth_night",
        "two_gentlemen_of_verona",
        "winters_tale",
    ]
