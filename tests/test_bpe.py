"""Tests of gptlib.bpe: the worked example, incremental training, special tokens, files, and
parity with Hugging Face ``tokenizers`` on the same vocabulary."""

import json
import random
from collections import Counter
from itertools import pairwise

import pytest
import regex

from gptlib.bpe import GPT2_SPLIT_PATTERN, BPETokenizer, learn_merges
from gptlib.pretrained import bpe_from_gpt2_files, gpt2_byte_to_unicode
from gptlib.tokenizer import TokenizerFileError, load_tokenizer

EOT = "<|endoftext|>"


def english_like(n_chars: int, seed: int = 0) -> str:
    """Deterministic English-like prose with numbers, contractions, odd spacing and non-Latin
    scripts: the same fixed input on every machine, with or without a corpus cache."""
    rng = random.Random(seed)
    words = (
        "the of and to in is that it was for on are with as his they be at one have this "
        "from or had by word but what some we can out other were all there when up use "
        "your how said an each she which do their time if will way about many then them "
        "write would like so these her long make thing see him two has look more day "
        "could go come did number sound no most people my over know water than call first "
        "who may down side been now find it's don't we'll I'm you're they've"
    ).split()
    extras = ["1999", "42", "3.14", "café", "naïve", "Ελλάδα", "机器学习", "🤖", "مرحبا", "e\u0301"]
    syllables = "ka tho ren mi sul bor ae qui ston ful lan ve dra ish po nel gri ath ox ur".split()
    words += ["".join(rng.choices(syllables, k=rng.randint(2, 4))) for _ in range(3000)]
    out, size = [], 0
    while size < n_chars:
        sentence = [rng.choice(words) for _ in range(rng.randint(3, 14))]
        if rng.random() < 0.3:
            sentence.insert(rng.randrange(len(sentence)), rng.choice(extras))
        piece = " ".join(sentence).capitalize() + rng.choice(
            [". ", "! ", "? ", ", ", ".\n", ".\n\n", ";  ", ":\t"]
        )
        out.append(piece)
        size += len(piece)
    return "".join(out)[:n_chars]


@pytest.fixture(scope="module")
def corpus() -> str:
    """600,000 characters of English-like text (fixed, offline, the same on every machine)."""
    return english_like(600_000)


def test_worked_example_aaabdaaabac():
    """The BPE example from Wikipedia, derived by hand with gptlib's tie-break.

    "aaabdaaabac" is one chunk (all letters); its bytes are a=97, b=98, c=99, d=100.
    Merge 1: pair counts are aa 4 (overlapping pairs all count), ab 2, bd 1, da 1, ba 1, ac 1,
      so (97, 97) -> 256 ("Z"): the text becomes Z a b d Z a b a c.
    Merge 2: Za 2, ab 2, bd 1, dZ 1, ba 1, ac 1. Za and ab tie at 2; the tie-break takes the
      smallest pair, (97, 98) < (256, 97), so (97, 98) -> 257 ("Y"): Z Y d Z Y a c.
    Merge 3: ZY 2, every other pair 1, so (256, 257) -> 258 ("X" = "aaab"): X d X a c.
    """
    tok = BPETokenizer().train("aaabdaaabac", vocab_size=256 + 3)
    assert tok.merges == [(97, 97), (97, 98), (256, 257)]
    assert [tok.vocab[i] for i in (256, 257, 258)] == [b"aa", b"ab", b"aaab"]
    assert tok.encode("aaabdaaabac") == [258, 100, 258, 97, 99]
    assert tok.vocab_size == 259


def naive_merges(text: str, n_merges: int) -> list[tuple[tuple[int, int], int]]:
    """Reference BPE: before every merge, recount all pairs of all chunk occurrences."""
    chunks = [list(chunk.encode("utf-8")) for chunk in regex.findall(GPT2_SPLIT_PATTERN, text)]
    merges = []
    for k in range(n_merges):
        counts = Counter(pair for ids in chunks for pair in pairwise(ids))
        if not counts:
            break
        best = min(counts, key=lambda pair: (-counts[pair], pair))  # most frequent, then smallest
        merges.append((best, counts[best]))
        new_chunks = []
        for ids in chunks:
            out, i = [], 0
            while i < len(ids):
                if ids[i : i + 2] == list(best):
                    out.append(256 + k)
                    i += 2
                else:
                    out.append(ids[i])
                    i += 1
            new_chunks.append(out)
        chunks = new_chunks
    return merges


def two_letter_words(n_words: int, seed: int = 0) -> str:
    """Words over {a, b}: runs like "aaaa" give overlapping pairs, and counts tie often."""
    rng = random.Random(seed)
    return " ".join(
        "".join(rng.choice("ab") for _ in range(rng.randint(1, 12))) for _ in range(n_words)
    )


@pytest.mark.parametrize(
    "text", [english_like(6000, seed=3), two_letter_words(800)], ids=["english-like", "two letters"]
)
def test_incremental_training_matches_full_recount(text):
    expected = naive_merges(text, 150)
    assert len(expected) == 150
    tok = BPETokenizer().train(text, vocab_size=256 + 150)
    assert tok.merges == [pair for pair, _ in expected]
    chunks = Counter(regex.findall(GPT2_SPLIT_PATTERN, text))
    learned = learn_merges([list(c.encode()) for c in chunks], list(chunks.values()), 150)
    assert learned == expected  # same pairs with the same counts


def test_training_stops_when_pairs_run_out():
    with pytest.warns(UserWarning, match="only allows 2 merges"):
        tok = BPETokenizer().train("abc", vocab_size=300)
    assert tok.vocab_size == 258


def test_training_rejects_bad_arguments():
    with pytest.raises(ValueError, match="too small"):
        BPETokenizer().train("hello", vocab_size=256, special_tokens=[EOT])
    with pytest.raises(ValueError, match="empty text"):
        BPETokenizer().train("", vocab_size=300)
    with pytest.raises(ValueError, match="non-empty strings"):
        BPETokenizer().train("hello", vocab_size=300, special_tokens=[""])


def test_verbose_training_shows_merges(capsys):
    BPETokenizer().train("aaabdaaabac", vocab_size=259, verbose=True)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "merge 1/3: (97, 97) -> 256 'aa' (4 occurrences)"
    assert lines[-1] == "merge 3/3: (256, 257) -> 258 'aaab' (2 occurrences)"


@pytest.fixture(scope="module")
def with_eot(corpus):
    return BPETokenizer().train(corpus[:50_000], vocab_size=512, special_tokens=[EOT])


def test_special_token_gets_last_id_and_is_never_learned():
    with pytest.warns(UserWarning):
        tok = BPETokenizer().train((EOT + "abc") * 50, vocab_size=300, special_tokens=[EOT])
    assert tok.merges == [(97, 98), (256, 99)]  # only "abc" was learned from
    assert tok.special_tokens == {EOT: 258}


def test_special_tokens_raise_by_default(with_eot):
    text = "To be, or not to be" + EOT + "that is the question"
    with pytest.raises(ValueError) as info:
        with_eot.encode(text)
    message = str(info.value)
    assert "'<|endoftext|>' at position 19" in message
    assert "allowed_special='all'" in message and "allowed_special='plain'" in message


@pytest.mark.parametrize("allowed", ["all", {EOT}, [EOT]])
def test_allowed_special_tokens_encode_to_their_id(with_eot, allowed):
    text = "To be" + EOT + "or not" + EOT
    ids = with_eot.encode(text, allowed_special=allowed)
    eot_id = with_eot.special_tokens[EOT]
    assert eot_id == with_eot.vocab_size - 1
    assert ids.count(eot_id) == 2 and ids[-1] == eot_id
    assert ids[: ids.index(eot_id)] == with_eot.encode("To be")
    assert with_eot.decode(ids) == text


def test_special_token_as_plain_text(with_eot):
    text = "a" + EOT + "b"
    ids = with_eot.encode(text, allowed_special="plain")
    assert with_eot.special_tokens[EOT] not in ids
    assert with_eot.decode(ids) == text
    assert len(ids) > 3  # "<|endoftext|>" spelled with ordinary tokens


@pytest.mark.parametrize("allowed", ["al", {"<|im_start|>"}])
def test_allowed_special_rejects_unknown_values(with_eot, allowed):
    with pytest.raises(ValueError, match="allowed_special must be"):
        with_eot.encode("hi", allowed_special=allowed)


@pytest.mark.parametrize("bad_id", [512, 10**6, -1])
def test_decode_unknown_id(with_eot, bad_id):
    with pytest.raises(ValueError, match=f"token id {bad_id} is not in the vocabulary"):
        with_eot.decode([65, bad_id])


def test_decode_cut_inside_a_character_gives_replacement_char():
    tok = BPETokenizer()  # untrained: one token per byte
    ids = tok.encode("é!")
    assert ids == [0xC3, 0xA9, 33]
    assert tok.decode(ids[1:]) == "\ufffd!"


def test_lone_surrogate_is_rejected():
    with pytest.raises(ValueError, match="surrogates not allowed"):
        BPETokenizer().encode("ok \ud800")


def test_save_load_round_trip(tmp_path, with_eot, corpus):
    path = tmp_path / "bpe.json"
    with_eot.save(path)
    saved = json.loads(path.read_text(encoding="utf-8"))
    assert (saved["type"], saved["version"], saved["pattern"]) == ("bpe", 1, GPT2_SPLIT_PATTERN)
    assert saved["special_tokens"] == {EOT: 511}
    a, b, new = saved["merges"][0]
    assert saved["vocab"][str(new)] == saved["vocab"][str(a)] + saved["vocab"][str(b)]
    text = corpus[200_000:210_000] + EOT + " 🤖"
    for loaded in (BPETokenizer.load(path), load_tokenizer(path)):
        assert loaded.merges == with_eot.merges
        assert loaded.vocab == with_eot.vocab
        assert loaded.special_tokens == with_eot.special_tokens
        assert loaded.encode(text, "all") == with_eot.encode(text, "all")


def _edit_json(key, change):
    def edit(text):
        fields = json.loads(text)
        change(fields[key])
        return json.dumps(fields)

    return edit


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda text: text[:-200], "is not valid JSON"),
        (_edit_json("merges", lambda m: m[0].__setitem__(0, 99_999)), "merge 0"),
        (_edit_json("merges", lambda m: m.append([97, 98])), r"\[id_a, id_b, merged_id\]"),
        (_edit_json("merges", lambda m: m[1].__setitem__(2, 256)), "already means other bytes"),
        (_edit_json("vocab", lambda v: v.__setitem__("300", "zzz")), "says token 300 is 'zzz'"),
        (_edit_json("byte_ids", lambda b: b.pop()), "256 distinct ids"),
        (_edit_json("special_tokens", lambda s: s.__setitem__(EOT, 5)), "each used once"),
        (lambda text: text.replace('"pattern"', '"regex"'), "field 'pattern' is missing"),
        (
            lambda text: json.dumps({**json.loads(text), "pattern": "(unclosed"}),
            "split pattern '\\(unclosed' is not a valid regex",
        ),
        (
            lambda text: json.dumps({**json.loads(text), "special_tokens": [EOT]}),
            "not a valid tokenizer file",
        ),
    ],
    ids=[
        "truncated",
        "undefined id",
        "short merge",
        "id clash",
        "vocab edited",
        "bytes",
        "special id",
        "no pattern",
        "bad pattern",
        "specials not a dict",
    ],
)
def test_load_rejects_tampered_files(tmp_path, with_eot, edit, message):
    path = tmp_path / "bpe.json"
    with_eot.save(path)
    path.write_text(edit(path.read_text(encoding="utf-8")), encoding="utf-8")
    with pytest.raises(TokenizerFileError, match=message):
        BPETokenizer.load(path)


def test_merged_ids_must_grow_with_the_merge_order():
    """Encoding takes the adjacent pair with the smallest merged id first, so a file whose merged
    ids do not follow the merge order would encode differently from how it was trained."""
    state = {"pattern": GPT2_SPLIT_PATTERN, "byte_ids": list(range(256)), "special_tokens": {}}
    tok = BPETokenizer.from_dict({**state, "merges": [[98, 99, 256], [97, 98, 257]]})
    assert tok.encode("abc") == [97, 256]  # "bc" was merged first, so "ab" never forms
    with pytest.raises(ValueError, match="merged ids must grow with the merge order"):
        BPETokenizer.from_dict({**state, "merges": [[98, 99, 257], [97, 98, 256]]})


def test_gpt2_byte_to_unicode_is_a_printable_bijection():
    table = gpt2_byte_to_unicode()
    assert sorted(table) == list(range(256))
    assert len(set(table.values())) == 256
    assert all(char.isprintable() and not char.isspace() for char in table.values())
    assert table[ord("A")] == "A" and table[ord(" ")] == "\u0120" and table[0] == "\u0100"


@pytest.fixture(scope="module")
def hf_files(tmp_path_factory, corpus):
    """A byte-level BPE trained by Hugging Face ``tokenizers`` and saved in GPT-2's format.

    The parity tests that use it skip when ``tokenizers`` is not installed; the rest of the BPE
    specification runs without it.
    """
    tokenizers = pytest.importorskip("tokenizers")
    decoders, models = tokenizers.decoders, tokenizers.models
    pre_tokenizers, trainers = tokenizers.pre_tokenizers, tokenizers.trainers
    hf = tokenizers.Tokenizer(models.BPE())
    # ByteLevel with use_regex=True (the default) splits with GPT-2's pattern.
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1000,
        special_tokens=[EOT],
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    hf.train_from_iterator([corpus[:400_000]], trainer)
    folder = tmp_path_factory.mktemp("hf")
    hf.model.save(str(folder))
    return hf, folder / "vocab.json", folder / "merges.txt"


def test_parity_with_hugging_face_tokenizers(hf_files, corpus):
    hf, vocab_json, merges_txt = hf_files
    ours = bpe_from_gpt2_files(vocab_json, merges_txt)
    assert ours.vocab_size == hf.get_vocab_size() == 1000
    assert len(ours.merges) == 1000 - 256 - 1
    assert ours.special_tokens == {EOT: hf.token_to_id(EOT)}
    sample = corpus[-100_000:]  # held out from training
    ids = ours.encode(sample)
    assert ids == hf.encode(sample).ids
    assert ours.decode(ids) == hf.decode(ids) == sample
    unusual = english_like(3000, seed=9) + " 🤖🙂👍🏽 机器学习 \x00\x01\x7f \u00a0\u3000 12345"
    assert ours.encode(unusual) == hf.encode(unusual).ids
    with_special = "The end." + EOT + "A new start"
    assert ours.encode(with_special, allowed_special="all") == hf.encode(with_special).ids


def test_gpt2_files_with_broken_merges_are_rejected(hf_files, tmp_path):
    _, vocab_json, merges_txt = hf_files
    lines = merges_txt.read_text(encoding="utf-8").splitlines()
    broken = tmp_path / "merges.txt"
    broken.write_text("\n".join(lines[:5] + ["Ġzzzq xx"] + lines[5:]), encoding="utf-8")
    with pytest.raises(TokenizerFileError, match=r"line 6: 'Ġzzzq xx' is not a merge"):
        bpe_from_gpt2_files(vocab_json, broken)
    vocab = json.loads(vocab_json.read_text(encoding="utf-8"))
    del vocab["Ġ"]
    no_space = tmp_path / "vocab.json"
    no_space.write_text(json.dumps(vocab), encoding="utf-8")
    with pytest.raises(TokenizerFileError, match="all 256 byte characters"):
        bpe_from_gpt2_files(no_space, merges_txt)
