"""gptlib.explorers: the static frames are complete, deterministic and self-contained; the live
route returns ipywidgets; the compute helpers agree with gptlib's sampling and BPE."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import ipywidgets
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from IPython.display import HTML  # noqa: E402

from gptlib import explorers as ex  # noqa: E402
from gptlib.bpe import BPETokenizer  # noqa: E402
from gptlib.model import GPT, GPTConfig  # noqa: E402
from gptlib.train import TrainConfig, lr_at  # noqa: E402

EXTERNAL = re.compile(r"https?:|(src|href)\s*=\s*[\"']?//|@import|url\(", re.I)
TEXT = "the cat sat on the mat; the hat is on the cat. " * 6


@pytest.fixture(scope="module")
def bpe() -> BPETokenizer:
    return BPETokenizer().train(TEXT, vocab_size=270)


@pytest.fixture(scope="module")
def model(bpe) -> GPT:
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=bpe.vocab_size, block_size=32, n_layer=2, n_head=2, n_embd=16)
    return GPT(cfg)


def frames(page: str) -> dict[str, str]:
    """data-gx-frame key -> the frame's opening tag."""
    return {key: tag for tag, key in re.findall(r'(<div data-gx-frame="([\d-]+)"[^>]*>)', page)}


def visible(page: str) -> list[str]:
    return [k for k, tag in frames(page).items() if "display:none" not in tag]


def simple(a: int, b: str) -> str:
    return f"<b>{a}{b}</b>"


CONTROLS = [ex.Control("a", "number", (1, 2, 3), default=2), ex.Control("b", "letter", ("x", "y"))]


def test_static_mode_reads_the_environment(monkeypatch):
    monkeypatch.delenv(ex.ENV_VAR, raising=False)
    assert not ex.static_mode()
    for value, expected in [("1", True), ("yes", True), ("0", False), ("", False)]:
        monkeypatch.setenv(ex.ENV_VAR, value)
        assert ex.static_mode() is expected


def test_control_validates():
    with pytest.raises(ValueError, match="identifier"):
        ex.Control("a b", "x", (1,))
    with pytest.raises(ValueError, match="no values"):
        ex.Control("a", "x", ())
    with pytest.raises(ValueError, match="labels"):
        ex.Control("a", "x", (1, 2), labels=("one",))
    with pytest.raises(ValueError, match="default"):
        ex.Control("a", "x", (1, 2), default=3)
    assert ex.Control("a", "x", (1, 2)).labels == ("1", "2")


def test_static_html_holds_every_frame_once_with_the_default_shown():
    page = ex.static_html("demo", CONTROLS, simple)
    keys = frames(page)
    assert sorted(keys) == sorted(f"{i}-{j}" for i in range(3) for j in range(2))
    assert visible(page) == ["1-0"]  # default a=2 (index 1), b="x" (index 0)
    for a_i, a in enumerate((1, 2, 3)):
        for b_i, b in enumerate("xy"):
            assert f'data-gx-frame="{a_i}-{b_i}"' in page and f"<b>{a}{b}</b>" in page
    assert page.count("<script>") == 1 and 'document.getElementById("gx-demo")' in page
    assert page.count('type="range"') == 2 and 'max="2"' in page and 'max="1"' in page


def test_static_html_is_deterministic_and_self_contained():
    a = ex.static_html("demo", CONTROLS, simple, caption="a caption")
    assert a == ex.static_html("demo", CONTROLS, simple, caption="a caption")
    assert not EXTERNAL.search(a)
    assert not re.search(r"0x[0-9a-f]{6,}", a)  # no object addresses


def test_static_html_refuses_big_grids_and_bad_ids():
    big = [ex.Control("a", "a", tuple(range(7))), ex.Control("b", "b", tuple(range(7)))]
    with pytest.raises(ValueError, match="frames"):
        ex.static_html("demo", big, simple)
    with pytest.raises(ValueError, match="explorer_id"):
        ex.static_html("Demo 1", CONTROLS, simple)


def test_png_frames_are_byte_stable():
    def fig():
        f, ax = plt.subplots(figsize=(2, 1.5))
        ax.plot([0, 1, 2], [1, 0, 2])
        return f

    first, second = ex.to_html(fig(), alt="x"), ex.to_html(fig(), alt="x")
    assert first == second and first.startswith('<img src="data:image/png;base64,')
    import base64

    png = base64.b64decode(first.split("base64,")[1].split('"')[0])
    assert b"Software" not in png and b"matplotlib" not in png
    assert not plt.get_fignums()  # the figures were closed
    with pytest.raises(TypeError):
        ex.to_html(42)


def test_explorer_switches_on_the_flag(monkeypatch):
    monkeypatch.setenv(ex.ENV_VAR, "1")
    out = ex.explorer("demo", CONTROLS, simple)
    assert isinstance(out, HTML) and "data-gx-frame" in out.data
    monkeypatch.setenv(ex.ENV_VAR, "0")
    live = ex.explorer("demo", CONTROLS, simple)
    assert isinstance(live, ipywidgets.interactive)
    names = [getattr(w, "description", "") for w in live.children]
    assert "number" in names and "letter" in names


def test_decoding_probs_matches_the_sampling_rules():
    logits = torch.tensor([3.0, 2.0, 1.0, 0.0, -1.0])
    plain = ex.decoding_probs(logits)
    torch.testing.assert_close(plain, torch.softmax(logits.double(), -1))
    assert int((ex.decoding_probs(logits, top_k=2) > 0).sum()) == 2
    nucleus = ex.decoding_probs(logits, top_p=0.9)
    kept = int((nucleus > 0).sum())
    assert plain[: kept - 1].sum() < 0.9 <= plain[:kept].sum()
    hot, cold = ex.decoding_probs(logits, 2.0), ex.decoding_probs(logits, 0.5)
    assert hot.max() < plain.max() < cold.max()
    assert ex.decoding_probs(logits, top_k=0).equal(plain)  # 0 means off
    with pytest.raises(ValueError):
        ex.decoding_probs(logits, temperature=0.0)


def test_truncate_bpe(bpe):
    for n in (0, 5, len(bpe.merges)):
        tok = ex.truncate_bpe(bpe, n)
        assert tok.vocab_size == 256 + n and tok.merges == bpe.merges[:n]
        assert tok.decode(tok.encode(TEXT)) == TEXT
    assert ex.truncate_bpe(bpe, len(bpe.merges)).encode(TEXT) == bpe.encode(TEXT)
    assert len(ex.truncate_bpe(bpe, 0).encode(TEXT)) == len(TEXT.encode())
    with pytest.raises(ValueError):
        ex.truncate_bpe(bpe, len(bpe.merges) + 1)


def test_decoding_explorer(model, bpe):
    page = ex.decoding_explorer(
        model,
        bpe,
        ["the cat", "on the"],
        temperatures=(0.5, 1.0),
        top_ks=(0, 3),
        top_ps=(1.0,),
        static=True,
    ).data
    assert len(frames(page)) == 2 * 2 * 2 * 1
    assert visible(page) == ["0-1-0-0"]  # temperature 1.0 by default
    assert page.count("<b>3</b> of 270 tokens can be drawn") == 4  # every top-k 3 frame
    assert (
        page
        == ex.decoding_explorer(
            model,
            bpe,
            ["the cat", "on the"],
            temperatures=(0.5, 1.0),
            top_ks=(0, 3),
            top_ps=(1.0,),
            static=True,
        ).data
    )
    assert not EXTERNAL.search(page)
    live = ex.decoding_explorer(model, bpe, ["the cat"], static=False)
    assert isinstance(live, ipywidgets.interactive)
    assert isinstance(live.children[0], ipywidgets.Textarea)  # free text in a kernel


def test_attention_explorer(model, bpe):
    page = ex.attention_explorer(model, bpe, ["the cat sat", "on the mat"], static=True).data
    assert len(frames(page)) == 2 * 2 * 2
    assert page.count('<table class="gx-hm"') == 8 and not EXTERNAL.search(page)
    n = len(bpe.encode("the cat sat"))
    first = page.split('data-gx-frame="0-0-1"')[0]
    assert first.count("<td") == n * n  # one cell per query and key
    assert isinstance(
        ex.attention_explorer(model, bpe, ["x"], static=False), ipywidgets.interactive
    )


def test_heatmap_html_shows_each_causal_weight():
    w = [[1.0, 0.0], [0.25, 0.75]]
    out = ex.heatmap_html(w, ["a", "b"], "t")
    assert re.findall(r'title="([\d.]+)"', out) == ["1.00", "0.25", "0.75"]


def test_tokenizer_explorer(bpe):
    page = ex.tokenizer_explorer(bpe, ["the cat", "a hat on a mat"], (0, 5, 14), static=True).data
    assert len(frames(page)) == 2 * 3 and visible(page) == ["0-2"]
    assert "<b>7</b> tokens for 7 bytes" in page  # no merges: one token per byte
    assert f"vocabulary {256 + 14:,}" in page and not EXTERNAL.search(page)
    bytes_page = ex.tokenizer_explorer(bpe, ["é"], (0,), static=True).data
    assert "\\xc3<sub>195</sub>" in bytes_page and "\\xa9<sub>169</sub>" in bytes_page
    live = ex.tokenizer_explorer(bpe, ["the cat"], (0, 14), static=False)
    assert isinstance(live, ipywidgets.interactive)


def test_lr_schedule_explorer_and_svg():
    base = TrainConfig(max_steps=20, lr=1e-2, min_lr=1e-3, warmup_steps=2)
    runs = {
        (w, p, d): ([3.0 - 0.05 * t * p * 100 for t in range(20)], 2.5 + w / 10)
        for w in (0, 5)
        for p in (1e-2, 3e-2)
        for d in (1.0, 0.1)
    }
    page = ex.lr_schedule_explorer(
        runs, base, (0, 5), (1e-2, 3e-2), (1.0, 0.1), reference=(5, 1e-2, 0.1), static=True
    ).data
    assert len(frames(page)) == 8 and visible(page) == ["1-0-1"]
    assert "<b>3.000</b>" in page and "<b>2.500</b>" in page
    assert not EXTERNAL.search(page)
    svgs = re.findall(r"<svg.*?</svg>", page)
    assert len(svgs) == 16
    for svg in svgs[:2]:
        ET.fromstring(svg)  # well-formed XML
    with pytest.raises(KeyError):  # a grid point with no stored run, and no run_fn
        ex.lr_schedule_explorer(runs, base, (0, 7), (1e-2,), (1.0,), static=True)
    # the schedule drawn is gptlib's: the first lr point of warmup 5 is lr_at(0) = peak / 5
    cfg = TrainConfig(max_steps=20, lr=1e-2, min_lr=1e-2, warmup_steps=5)
    assert lr_at(0, cfg) == pytest.approx(2e-3)


def test_line_chart_svg_maps_values_to_pixels():
    svg = ex.line_chart_svg(
        [("a", [0.0, 1.0], "#000")], "x", "y", (0.0, 1.0), width=100, height=100
    )
    root = ET.fromstring(svg)
    line = [e for e in root.iter() if e.tag.endswith("polyline")][0]
    (x0, y0), (x1, y1) = (tuple(map(float, p.split(","))) for p in line.get("points").split())
    assert x0 < x1 and y0 > y1  # up and to the right
    assert (x0, y1) == (58.0, 10.0) and y0 == 60.0  # the plot box: left 58, top 10, bottom 40


def test_lr_schedule_explorer_trains_missing_settings_live():
    base = TrainConfig(max_steps=10, lr=1e-2, min_lr=1e-3, warmup_steps=2)
    runs = {(2, 1e-2, 0.1): ([3.0] * 10, 2.9)}
    calls = []

    def run_fn(warmup, peak, decay):
        calls.append((warmup, peak, decay))
        return [2.0] * 10, 1.5

    live = ex.lr_schedule_explorer(
        runs, base, (2,), (1e-2,), (0.1,), reference=(2, 1e-2, 0.1), run_fn=run_fn, static=False
    )
    assert isinstance(live, ipywidgets.interactive) and calls == []  # the stored run is used
    warmup = next(w for w in live.children if getattr(w, "description", "") == "warmup steps")
    warmup.value = 3
    assert calls == [(3, 1e-2, 0.1)]
