"""Tests of the tokenizer interface, CharTokenizer, and round trips of both gptlib tokenizers."""

import contextlib
import json
import random

import pytest
import torch

import gptlib.tokenizer
from gptlib.bpe import BPETokenizer
from gptlib.tokenizer import CharTokenizer, Tokenizer, TokenizerFileError, load_tokenizer


def shakespeare_like(n_chars: int, seed: int = 0) -> str:
    """Deterministic verse with speaker names, contractions and punctuation, ``n_chars`` long."""
    rng = random.Random(seed)
    words = (
        "thou thee thy love doth hath night sweet lord fair heart death o'er 'tis I'll "
        "what shall be sleep gentle mine eyes king crown blood noble speak good"
    ).split()
    speakers = ["HAMLET", "OPHELIA", "KING LEAR", "First Citizen"]
    lines = []
    while sum(map(len, lines)) < n_chars:
        lines.append(f"{rng.choice(speakers)}:")
        for _ in range(rng.randint(1, 4)):
            verse = " ".join(rng.choice(words) for _ in range(rng.randint(4, 9)))
            lines.append(verse[0].upper() + verse[1:] + rng.choice([",", ".", "!", "?", ";"]))
        lines.append("")
    return "\n".join(lines)[:n_chars]


ROUND_TRIP_TEXTS = {
    "empty": "",
    "one char": "a",
    "space": " ",
    "hello": "hello world",
    "leading spaces": "  leading spaces",
    "whitespace": "tabs\tand\nnewlines\r\n",
    "emoji": "🤖🙂👍🏽",
    "cjk": "机器学习",
    "arabic": "مرحبا بالعالم",
    "combining accents": "e\u0301 a\u0308 n\u0303 (decomposed), é ä ñ (composed)",
    "control chars": "\x00\x01\x7f",
    "shakespeare-like": shakespeare_like(2000),
}


@pytest.fixture(scope="module")
def bpe_on_sample():
    """A BPE tokenizer trained once on verse unlike most of the round-trip texts."""
    return BPETokenizer().train(shakespeare_like(20_000, seed=1), vocab_size=400)


def make_char(text):
    # An untrained CharTokenizer (empty vocabulary) can still encode the empty string.
    return CharTokenizer().train(text) if text else CharTokenizer()


@pytest.mark.filterwarnings("ignore:the text only allows")
@pytest.mark.parametrize("text", ROUND_TRIP_TEXTS.values(), ids=ROUND_TRIP_TEXTS.keys())
@pytest.mark.parametrize("kind", ["char", "bpe trained on the text", "bpe trained on verse"])
def test_round_trip(kind, text, bpe_on_sample):
    if kind == "char":
        tok = make_char(text)
    elif kind == "bpe trained on verse":
        tok = bpe_on_sample
    else:
        tok = BPETokenizer().train(text, vocab_size=260) if text else BPETokenizer()
    ids = tok.encode(text)
    assert all(isinstance(i, int) and 0 <= i < tok.vocab_size for i in ids)
    assert tok.decode(ids) == text
    if kind == "char":
        assert len(ids) == len(text)
    else:  # byte-level: never more tokens than UTF-8 bytes
        assert len(ids) <= len(text.encode("utf-8"))


def test_bpe_needs_fewer_tokens_than_characters(bpe_on_sample):
    text = ROUND_TRIP_TEXTS["shakespeare-like"]
    assert len(bpe_on_sample.encode(text)) < 0.6 * len(CharTokenizer().train(text).encode(text))


def test_char_vocabulary_is_sorted_set_of_characters():
    tok = CharTokenizer().train("hello world")
    assert tok.chars == [" ", "d", "e", "h", "l", "o", "r", "w"]
    assert tok.vocab_size == 8
    assert tok.encode("hold") == [3, 5, 4, 1]


def test_char_error_names_first_unknown_character():
    tok = CharTokenizer().train("hello world")
    with pytest.raises(ValueError) as info:
        tok.encode("hello wörld, café")
    assert str(info.value) == (
        "character 'ö' (U+00F6) at position 7 is not in the vocabulary of 8 characters"
    )


def test_char_error_shows_invisible_characters():
    tok = CharTokenizer().train("ab")
    with pytest.raises(ValueError, match=r"'\\t' \(U\+0009\) at position 1"):
        tok.encode("a\tb")


@pytest.mark.parametrize("bad_id", [8, 100, -1])
def test_char_decode_rejects_unknown_ids(bad_id):
    tok = CharTokenizer().train("hello world")
    with pytest.raises(ValueError, match=f"token id {bad_id} is not in the vocabulary"):
        tok.decode([0, bad_id])


def test_decode_accepts_tensors_and_rejects_non_integers():
    tok = CharTokenizer().train("hello world")
    ids = tok.encode("hello")
    assert tok.decode(torch.tensor(ids)) == "hello"
    with pytest.raises(TypeError, match="token ids must be integers"):
        tok.decode([1.5])


def test_char_train_rejects_empty_text_and_wrong_vocab_size():
    with pytest.raises(ValueError, match="empty text"):
        CharTokenizer().train("")
    with pytest.raises(ValueError, match="8 distinct characters"):
        CharTokenizer().train("hello world", vocab_size=100)
    assert CharTokenizer().train("hello world", vocab_size=8).vocab_size == 8


def test_char_save_load_round_trip(tmp_path):
    text = ROUND_TRIP_TEXTS["shakespeare-like"] + " é\t🤖"
    tok = CharTokenizer().train(text)
    path = tmp_path / "char.json"
    tok.save(path)
    saved = json.loads(path.read_text(encoding="utf-8"))
    assert saved["type"] == "char" and saved["version"] == 1
    assert "🤖" in path.read_text(encoding="utf-8")  # written as itself, readable
    for loaded in (CharTokenizer.load(path), load_tokenizer(path), Tokenizer.load(path)):
        assert isinstance(loaded, CharTokenizer)
        assert loaded.chars == tok.chars
        assert loaded.encode(text) == tok.encode(text)
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_load_tokenizer_dispatches_on_type(tmp_path):
    CharTokenizer().train("abc").save(tmp_path / "char.json")
    BPETokenizer().train("abcabc", vocab_size=258).save(tmp_path / "bpe.json")
    assert type(load_tokenizer(tmp_path / "char.json")) is CharTokenizer
    assert type(load_tokenizer(tmp_path / "bpe.json")) is BPETokenizer
    with pytest.raises(TokenizerFileError, match="holds a 'bpe' tokenizer, not a 'char' one"):
        CharTokenizer.load(tmp_path / "bpe.json")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda text: text[: len(text) // 2], "is not valid JSON"),
        (lambda text: text.replace('"char"', '"wordpiece"'), "tokenizer type 'wordpiece'"),
        (lambda text: text.replace('"version": 1', '"version": 7'), "format version 7"),
        (lambda text: text.replace('"b"', '"a"'), "lists a character twice"),
        (lambda text: text.replace('"b"', '"bb"'), "single characters, got 'bb'"),
        (lambda text: text.replace('"chars"', '"characters"'), "field 'chars' is missing"),
        (lambda text: "[1, 2]", 'no "type" field'),
    ],
    ids=[
        "truncated",
        "unknown type",
        "future version",
        "duplicate",
        "not a char",
        "no field",
        "not a dict",
    ],
)
def test_char_load_rejects_garbled_files(tmp_path, edit, message):
    path = tmp_path / "char.json"
    CharTokenizer().train("abc").save(path)
    path.write_text(edit(path.read_text(encoding="utf-8")), encoding="utf-8")
    with pytest.raises(TokenizerFileError, match=message):
        load_tokenizer(path)


def test_load_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no tokenizer file"):
        load_tokenizer(tmp_path / "nope.json")


def test_a_save_that_crashes_half_way_keeps_the_old_file(tmp_path, monkeypatch):
    """The disk fills up after half the JSON is written: the old tokenizer file survives whole."""
    path = tmp_path / "tok.json"
    CharTokenizer().train("abc").save(path)
    before = path.read_bytes()
    real = gptlib.tokenizer.atomic_write

    @contextlib.contextmanager
    def disk_full(target, *args, **kwargs):
        with real(target, *args, **kwargs) as f:

            class HalfWriter:
                def write(self, text):
                    f.write(text[: len(text) // 2])
                    raise OSError("disk full")

            yield HalfWriter()

    monkeypatch.setattr(gptlib.tokenizer, "atomic_write", disk_full)
    with pytest.raises(OSError, match="disk full"):
        CharTokenizer().train("xyz").save(path)
    assert path.read_bytes() == before and load_tokenizer(path).chars == ["a", "b", "c"]
    assert [p.name for p in tmp_path.iterdir()] == ["tok.json"]  # no temporary file left


def test_a_new_tokenizer_type_registers_itself(tmp_path, monkeypatch):
    """load_tokenizer finds subclasses through a registry, so tokenizer.py never imports them."""
    monkeypatch.setattr(gptlib.tokenizer, "_TYPES", dict(gptlib.tokenizer._TYPES))

    class UpperTokenizer(CharTokenizer):
        type_name = "upper"

        def encode(self, text):
            return super().encode(text.upper())

    tok = UpperTokenizer().train("ABC")
    tok.save(tmp_path / "upper.json")
    loaded = load_tokenizer(tmp_path / "upper.json")
    assert type(loaded) is UpperTokenizer and loaded.encode("cab") == [2, 0, 1]
    assert set(gptlib.tokenizer._TYPES) >= {"char", "bpe", "upper"}
