"""Explorers: small interactive figures that work in Jupyter and on the static website.

An explorer is a *frame function* (keyword arguments in, one picture or HTML fragment out) plus
a list of `Control`s. `explorer` shows it in one of two ways:

* **live** (a Jupyter kernel): an ``ipywidgets.interactive`` whose sliders call the frame function
  on `gptlib` for every new setting, including settings no grid contains;
* **static** (the environment variable ``GPTLIB_STATIC_EXPLORERS=1``, set by ``make execute`` and
  by nbval): the frame function is called once for every point of the controls' grid, and the cell
  emits one ``text/html`` output holding every frame and a few lines of page-local JavaScript
  that show the frame the reader's controls select. The website has no kernel and no network,
  and still responds; nothing is loaded from another host.

The static HTML is deterministic (no random ids, PNG frames written without a timestamp or
software tag), so re-executing a notebook gives the same bytes on the same library versions. The
book's four explorers draw their frames as plain HTML tables and hand-written inline SVG rather
than PNG: a frame weighs a few kB, and its bytes depend on the numbers alone. Committed notebooks
must hold this HTML, never widget state (``tests/test_notebooks.py`` checks).

The four explorers of the book (compute helpers first, then the explorer builders):
`decoding_explorer` (temperature, top-k, top-p on a model's next-token distribution),
`attention_explorer` (layer, head, sentence), `tokenizer_explorer` (BPE merges and token ids)
and `lr_schedule_explorer` (warmup, peak, decay, with the loss curves of the resulting runs).
"""

from __future__ import annotations

import base64
import dataclasses
import html
import io
import itertools
import json
import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from gptlib.bpe import BPETokenizer, readable_bytes
from gptlib.generate import top_k_mask, top_p_mask

__all__ = [
    "ENV_VAR",
    "Control",
    "static_mode",
    "frame_key",
    "to_html",
    "static_html",
    "live_widget",
    "explorer",
    "token_label",
    "decoding_probs",
    "truncate_bpe",
    "heatmap_html",
    "line_chart_svg",
    "decoding_explorer",
    "attention_explorer",
    "tokenizer_explorer",
    "lr_schedule_explorer",
]

ENV_VAR = "GPTLIB_STATIC_EXPLORERS"
MAX_FRAMES = 40  # a guard: every frame travels with the page


def static_mode() -> bool:
    """True when explorers should emit precomputed HTML (``GPTLIB_STATIC_EXPLORERS`` set, not 0)."""
    return os.environ.get(ENV_VAR, "").strip() not in ("", "0")


@dataclass(frozen=True)
class Control:
    """One control of an explorer.

    Args:
        name: the keyword argument of the frame function it sets.
        label: what the reader sees beside it.
        values: the grid of values precomputed for the static page (the live slider's choices
            too, unless ``live`` is given).
        labels: how each value is shown; default ``str(value)``.
        default: the value selected at first; default the first of ``values``.
        live: an ipywidgets widget to use in a live kernel instead (e.g. a free-text box or a
            continuous slider); its value is passed to the frame function as it is.
    """

    name: str
    label: str
    values: tuple
    labels: tuple[str, ...] | None = None
    default: Any = None
    live: Any = None

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z_]\w*", self.name):
            raise ValueError(f"control name {self.name!r} is not a Python identifier")
        object.__setattr__(self, "values", tuple(self.values))
        if not self.values:
            raise ValueError(f"control {self.name!r} has no values")
        if self.labels is None:
            object.__setattr__(self, "labels", tuple(str(v) for v in self.values))
        if len(self.labels) != len(self.values):
            raise ValueError(
                f"control {self.name!r}: {len(self.labels)} labels for {len(self.values)} values"
            )
        if self.default is None:
            object.__setattr__(self, "default", self.values[0])
        elif self.default not in self.values:
            raise ValueError(f"control {self.name!r}: default {self.default!r} is not a value")

    @property
    def default_index(self) -> int:
        return self.values.index(self.default)


def frame_key(indices: Sequence[int]) -> str:
    """The id of the frame selected by one index per control, as the page's script builds it.

    >>> frame_key([0, 2, 1])
    '0-2-1'
    """
    return "-".join(str(int(i)) for i in indices)


def to_html(frame: Any, alt: str = "", dpi: int = 72) -> str:
    """An HTML fragment for one frame: a string is taken as HTML; a matplotlib figure becomes a
    PNG ``<img>`` (no timestamp or software tag, so the bytes are stable) and is closed."""
    if isinstance(frame, str):
        return frame
    savefig = getattr(frame, "savefig", None)
    if savefig is None:
        raise TypeError(f"a frame must be an HTML string or a matplotlib figure, not {type(frame)}")
    buf = io.BytesIO()
    savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    import matplotlib.pyplot as plt

    plt.close(frame)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}" class="gx-img">'


_SCRIPT = """<script>
(function () {
  var root = document.getElementById(%(id)s);
  if (!root) return;
  var inputs = Array.prototype.slice.call(root.querySelectorAll("[data-gx-control]"));
  var frames = Array.prototype.slice.call(root.querySelectorAll("[data-gx-frame]"));
  function show() {
    var key = inputs.map(function (e) { return e.value; }).join("-");
    frames.forEach(function (f) {
      f.style.display = f.getAttribute("data-gx-frame") === key ? "" : "none";
    });
    inputs.forEach(function (e) {
      var out = root.querySelector('output[data-gx-for="' + e.name + '"]');
      if (out) out.textContent = JSON.parse(e.getAttribute("data-gx-labels"))[+e.value];
    });
    root.setAttribute("data-gx-shown", key);
  }
  inputs.forEach(function (e) { e.addEventListener("input", show); });
  show();
})();
</script>"""

_STYLE = (
    "<style>.gx-controls{display:flex;flex-wrap:wrap;gap:.4em 1.4em;margin:.3em 0 .6em}"
    ".gx-controls label{display:flex;align-items:center;gap:.4em}"
    ".gx-controls output{font-family:monospace;min-width:4em}"
    ".gx-img{max-width:100%;height:auto}"
    ".gptlib-explorer table{margin:0}"
    ".gx-tab td,.gx-tab th{padding:1px 10px;text-align:right}"
    ".gx-tab td:first-child,.gx-tab th:first-child{text-align:left}"
    ".gx-hm{border-collapse:collapse;width:auto}"
    ".gx-hm td{width:18px;height:18px;padding:0;border:0;background:var(--gx-zero)}"
    ".gx-hm th{font-weight:normal;font-family:monospace;font-size:80%;padding:0 4px;"
    "text-align:right}"
    ".gx-hm th.gx-top{writing-mode:vertical-rl;transform:rotate(180deg);padding:2px 0;"
    "text-align:left}</style>"
)


def static_html(
    explorer_id: str,
    controls: Sequence[Control],
    frame_fn: Callable[..., Any],
    caption: str = "",
) -> str:
    """Every frame of the controls' grid, with page-local controls that switch between them.

    Controls whose values have an order are range sliders; a control with one value is shown
    as text. Frames are ``<div data-gx-frame="i-j-...">``, all but the default hidden.
    """
    if not re.fullmatch(r"[a-z][a-z0-9-]*", explorer_id):
        raise ValueError(f"explorer_id {explorer_id!r}: use lower-case letters, digits and -")
    n_frames = math.prod(len(c.values) for c in controls)
    if n_frames > MAX_FRAMES:
        raise ValueError(f"{n_frames} frames is more than {MAX_FRAMES}: use a coarser grid")
    dom_id = f"gx-{explorer_id}"
    parts = [f'<div class="gptlib-explorer" id="{dom_id}">', _STYLE]
    if caption:
        parts.append(f'<p class="gx-caption">{html.escape(caption)}</p>')
    parts.append('<form class="gx-controls" onsubmit="return false">')
    for c in controls:
        labels = html.escape(json.dumps(list(c.labels)), quote=True)
        parts.append(
            f"<label>{html.escape(c.label)} "
            f'<input type="range" name="{c.name}" min="0" max="{len(c.values) - 1}" step="1" '
            f'value="{c.default_index}" data-gx-control data-gx-labels="{labels}" '
            f'aria-label="{html.escape(c.label)}">'
            f'<output data-gx-for="{c.name}">{html.escape(c.labels[c.default_index])}</output>'
            "</label>"
        )
    parts.append("</form>")
    default = frame_key([c.default_index for c in controls])
    for indices in itertools.product(*(range(len(c.values)) for c in controls)):
        key = frame_key(indices)
        kwargs = {c.name: c.values[i] for c, i in zip(controls, indices, strict=True)}
        alt = ", ".join(f"{c.label} {c.labels[i]}" for c, i in zip(controls, indices, strict=True))
        hidden = "" if key == default else ' style="display:none"'
        parts.append(f'<div data-gx-frame="{key}"{hidden}>{to_html(frame_fn(**kwargs), alt)}</div>')
    parts.append(_SCRIPT % {"id": json.dumps(dom_id)})
    parts.append("</div>")
    return "\n".join(parts)


def live_widget(controls: Sequence[Control], frame_fn: Callable[..., Any]) -> Any:
    """An ``ipywidgets.interactive`` calling ``frame_fn`` on every change of a control."""
    import ipywidgets as widgets
    from IPython.display import HTML, display

    kwargs = {}
    for c in controls:
        if c.live is not None:
            kwargs[c.name] = c.live
        else:
            kwargs[c.name] = widgets.SelectionSlider(
                options=list(zip(c.labels, c.values, strict=True)),
                value=c.default,
                description=c.label,
                continuous_update=False,
                style={"description_width": "initial"},
            )

    def show(**values: Any) -> None:
        display(HTML(to_html(frame_fn(**values))))

    return widgets.interactive(show, **kwargs)


def explorer(
    explorer_id: str,
    controls: Sequence[Control],
    frame_fn: Callable[..., Any],
    caption: str = "",
    static: bool | None = None,
) -> Any:
    """Live widgets in a kernel, or (``static`` or `static_mode`) an ``IPython.display.HTML``
    holding every frame. Make it the last expression of a cell."""
    if static is None:
        static = static_mode()
    if static:
        from IPython.display import HTML

        return HTML(static_html(explorer_id, controls, frame_fn, caption))
    return live_widget(controls, frame_fn)


# --------------------------------------------------------------------------- compute helpers


def token_label(text: str) -> str:
    """A token's text with its white space made visible (space ␣, newline ↵, tab →).

    >>> token_label(" the"), token_label("\\n")
    ('␣the', '↵')
    """
    return text.replace(" ", "\u2423").replace("\n", "\u21b5").replace("\t", "\u2192")


def _piece(tokenizer: Any, token_id: int) -> str:
    """The text of one token; a byte that is only part of a character is shown as \\xNN."""
    vocab = getattr(tokenizer, "vocab", None)
    if isinstance(vocab, dict) and isinstance(vocab.get(token_id), bytes):
        return readable_bytes(vocab[token_id])
    return tokenizer.decode([token_id])


def decoding_probs(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
) -> torch.Tensor:
    """The distribution `gptlib.generate.sample_next` draws from: logits (V,) divided by the
    temperature, then top-k, then top-p; ``top_k`` 0 or None and ``top_p`` None or 1 mean off.

    >>> p = decoding_probs(torch.tensor([2.0, 1.0, 0.0]), temperature=1.0, top_k=2)
    >>> [round(v, 3) for v in p.tolist()]
    [0.731, 0.269, 0.0]
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0 here, got {temperature!r}")
    z = (logits.double() / temperature).unsqueeze(0)  # (1, V)
    if top_k:
        z = top_k_mask(z, int(top_k))
    if top_p is not None and top_p < 1.0:
        z = top_p_mask(z, float(top_p))
    return F.softmax(z, dim=-1).squeeze(0)  # (V,)


def truncate_bpe(tok: BPETokenizer, n_merges: int) -> BPETokenizer:
    """The same tokenizer after only its first ``n_merges`` merges (special tokens dropped).

    >>> tok = BPETokenizer().train("aaabdaaabac", vocab_size=259)
    >>> truncate_bpe(tok, 1).encode("aaab")
    [256, 97, 98]
    """
    if not 0 <= n_merges <= len(tok.merges):
        raise ValueError(f"n_merges must be in 0..{len(tok.merges)}, got {n_merges!r}")
    state = tok.to_dict()
    state.update(merges=state["merges"][:n_merges], special_tokens={}, vocab={})
    return BPETokenizer.from_dict(state)


def _bar_row(label: str, base: float, shown: float, width: int = 220) -> str:
    return (
        f"<tr><td><code>{html.escape(label)}</code></td>"
        f'<td style="text-align:right">{base:.3f}</td>'
        f'<td style="text-align:right">{shown:.3f}</td>'
        f'<td><div style="background:#4878cf;height:.8em;width:{round(width * shown)}px">'
        "</div></td></tr>"
    )


def _viridis(x: float) -> str:
    """A colour of matplotlib's viridis map for x in [0, 1], as #rrggbb."""
    from matplotlib import colormaps

    r, g, b, _ = colormaps["viridis"](min(max(x, 0.0), 1.0))
    return f"#{round(r * 255):02x}{round(g * 255):02x}{round(b * 255):02x}"


def heatmap_html(weights: Sequence[Sequence[float]], labels: Sequence[str], title: str) -> str:
    """A square matrix (rows: queries, columns: keys) as an HTML table of coloured cells, with
    the tokens on both axes and a colour bar from 0 to 1; hovering a cell shows its weight."""
    top = 'class="gx-top"'
    head = "".join(f"<th {top}>{html.escape(t)}</th>" for t in labels)
    rows = []
    for q, (label, row) in enumerate(zip(labels, weights, strict=True)):
        # the causal mask makes the cells right of the diagonal 0: they keep the table's colour
        cells = "".join(
            f'<td style="background:{_viridis(w)}" title="{w:.2f}"></td>' if k <= q else "<td></td>"
            for k, w in enumerate(row)
        )
        rows.append(f"<tr><th>{html.escape(label)}</th>{cells}</tr>")
    ramp = ",".join(_viridis(i / 8) for i in range(9))
    return (
        f"<p><b>{html.escape(title)}</b>: rows are queries (the attending token), columns are "
        "keys (the attended-to token); each row sums to 1.</p>"
        '<div style="display:flex;align-items:flex-start;gap:14px">'
        f'<table class="gx-hm" style="--gx-zero:{_viridis(0.0)}"><tr><th></th>{head}</tr>'
        + "".join(rows)
        + "</table>"
        '<div style="display:flex;flex-direction:column;align-items:center;font-size:80%">'
        "<span>1.0</span>"
        f'<div style="width:14px;height:160px;background:linear-gradient(to top,{ramp})"></div>'
        "<span>0.0</span><span>attention weight</span></div></div>"
    )


# --------------------------------------------------------------------------- the four explorers


def decoding_explorer(
    model: torch.nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    temperatures: Sequence[float] = (0.5, 1.0, 1.5),
    top_ks: Sequence[int] = (0, 10),
    top_ps: Sequence[float] = (1.0, 0.9),
    shown: int = 12,
    explorer_id: str = "decoding",
    static: bool | None = None,
) -> Any:
    """Temperature, top-k and top-p applied to ``model``'s next-token distribution after a prompt.

    Each frame is a table of the ``shown`` most likely tokens: their probability under the model
    (temperature 1, no filter) and under the chosen setting, with the number of tokens that can
    still be drawn and the entropy of the distribution in bits.
    """
    from gptlib.model import evaluating

    cache: dict[str, torch.Tensor] = {}

    def logits_for(prompt: str) -> torch.Tensor:
        if prompt not in cache:
            ids = tokenizer.encode(prompt)
            block = model.config.block_size
            idx = torch.tensor([ids[-block:]], dtype=torch.long)  # (1, T)
            with evaluating(model), torch.no_grad():
                logits, _ = model(idx)  # (1, T, V)
            cache[prompt] = logits[0, -1].double()  # (V,)
        return cache[prompt]

    def frame(prompt: str, temperature: float, top_k: int, top_p: float) -> str:
        logits = logits_for(prompt)
        base = F.softmax(logits, dim=-1)
        probs = decoding_probs(logits, temperature, top_k, top_p)
        order = torch.argsort(probs, descending=True, stable=True)[:shown]
        alive = int((probs > 0).sum())
        nz = probs[probs > 0]
        entropy = float(-(nz * nz.log2()).sum())
        rows = [
            _bar_row(token_label(_piece(tokenizer, i)), float(base[i]), float(probs[i]))
            for i in order.tolist()
        ]
        return (
            f"<p>After <code>{html.escape(token_label(prompt[-60:]))}</code>: "
            f"<b>{alive:,}</b> of {probs.numel():,} tokens can be drawn; "
            f"entropy <b>{entropy:.2f}</b> bits.</p>"
            '<table class="gx-tab"><thead><tr><th>token</th><th>model p</th><th>p drawn from</th>'
            "<th></th>"
            "</tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
        )

    live = _live_decoding_widgets(prompts[0]) if not _is_static(static) else {}
    controls = [
        Control(
            "prompt",
            "prompt",
            tuple(prompts),
            tuple(token_label(p if len(p) <= 24 else "…" + p[-23:]) for p in prompts),
            live=live.get("prompt"),
        ),
        Control(
            "temperature",
            "temperature",
            tuple(temperatures),
            default=1.0 if 1.0 in temperatures else None,
            live=live.get("temperature"),
        ),
        Control(
            "top_k",
            "top-k",
            tuple(top_ks),
            tuple("off" if not k else str(k) for k in top_ks),
            live=live.get("top_k"),
        ),
        Control(
            "top_p",
            "top-p",
            tuple(top_ps),
            tuple("off" if p >= 1 else str(p) for p in top_ps),
            live=live.get("top_p"),
        ),
    ]
    return explorer(explorer_id, controls, frame, static=static)


def _is_static(static: bool | None) -> bool:
    return static_mode() if static is None else static


def _live_decoding_widgets(prompt: str) -> dict[str, Any]:
    import ipywidgets as w

    slider = {"continuous_update": False, "style": {"description_width": "initial"}}
    return {
        "prompt": w.Textarea(value=prompt, description="prompt", continuous_update=False),
        "temperature": w.FloatSlider(
            value=1.0, min=0.05, max=2.0, step=0.05, description="temperature", **slider
        ),
        "top_k": w.IntSlider(value=0, min=0, max=200, description="top-k (0 = off)", **slider),
        "top_p": w.FloatSlider(
            value=1.0, min=0.05, max=1.0, step=0.05, description="top-p (1 = off)", **slider
        ),
    }


def attention_explorer(
    model: torch.nn.Module,
    tokenizer: Any,
    sentences: Sequence[str],
    explorer_id: str = "attention",
    static: bool | None = None,
) -> Any:
    """The attention weights of one head of one layer of ``model`` on a sentence: a heatmap with
    the query position down and the key position across (a frame per sentence, layer, head)."""
    cache: dict[str, tuple[list[str], list[torch.Tensor]]] = {}

    def maps_for(sentence: str) -> tuple[list[str], list[torch.Tensor]]:
        if sentence not in cache:
            ids = tokenizer.encode(sentence)[-model.config.block_size :]
            with torch.no_grad():
                maps = model.attention_maps(torch.tensor([ids]))  # n_layer x (1, nh, T, T)
            labels = [token_label(_piece(tokenizer, i)) for i in ids]
            cache[sentence] = (labels, [m[0] for m in maps])
        return cache[sentence]

    def frame(sentence: str, layer: int, head: int) -> str:
        labels, maps = maps_for(sentence)
        return heatmap_html(maps[layer][head].tolist(), labels, f"layer {layer}, head {head}")

    cfg = model.config
    controls = [
        Control(
            "sentence",
            "sentence",
            tuple(sentences),
            tuple(s if len(s) <= 28 else s[:27] + "…" for s in sentences),
        ),
        Control("layer", "layer", tuple(range(cfg.n_layer))),
        Control("head", "head", tuple(range(cfg.n_head))),
    ]
    if not _is_static(static):
        import ipywidgets as w

        controls[0] = dataclasses.replace(
            controls[0],
            live=w.Text(value=sentences[0], description="sentence", continuous_update=False),
        )
    return explorer(explorer_id, controls, frame, static=static)


def tokenizer_explorer(
    tokenizer: BPETokenizer,
    texts: Sequence[str],
    merge_steps: Sequence[int],
    explorer_id: str = "tokenizer",
    static: bool | None = None,
) -> Any:
    """A text split into tokens by ``tokenizer`` after its first n merges (vocabulary 256 + n):
    the pieces, their ids, and the count of tokens against bytes. A token that is not whole UTF-8
    text (one byte of a multi-byte character) is shown as \\xNN."""
    truncated: dict[int, BPETokenizer] = {}
    palette = ("#dbe9f6", "#fde2c8", "#d9f0d3", "#f3d9f0", "#fff3b0")

    def frame(text: str, merges: int) -> str:
        if merges not in truncated:
            truncated[merges] = truncate_bpe(tokenizer, merges)
        tok = truncated[merges]
        ids = tok.encode(text)
        spans = "".join(
            f'<span title="id {i}" style="background:{palette[k % len(palette)]};'
            f'padding:1px 2px;margin:1px;display:inline-block;font-family:monospace">'
            f"{html.escape(token_label(_piece(tok, i)))}<sub>{i}</sub></span>"
            for k, i in enumerate(ids)
        )
        n_bytes = len(text.encode("utf-8"))
        return (
            f"<p>vocabulary {tok.vocab_size:,} (256 bytes + {merges:,} merges): "
            f"<b>{len(ids)}</b> tokens for {n_bytes} bytes "
            f"({n_bytes / max(len(ids), 1):.2f} bytes per token)</p><div>{spans}</div>"
        )

    controls = [
        Control(
            "text",
            "sample text",
            tuple(texts),
            tuple(t if len(t) <= 28 else t[:27] + "…" for t in texts),
        ),
        Control("merges", "merges", tuple(merge_steps), default=merge_steps[-1]),
    ]
    if not _is_static(static):
        import ipywidgets as w

        controls = [
            dataclasses.replace(
                controls[0],
                live=w.Textarea(value=texts[0], description="text", continuous_update=False),
            ),
            dataclasses.replace(
                controls[1],
                live=w.IntSlider(
                    value=len(tokenizer.merges),
                    min=0,
                    max=len(tokenizer.merges),
                    description="merges",
                    continuous_update=False,
                ),
            ),
        ]
    return explorer(explorer_id, controls, frame, static=static)


def lr_schedule_explorer(
    runs: dict[tuple[int, float, float], tuple[Sequence[float], float]],
    base: Any,
    warmups: Sequence[int],
    peaks: Sequence[float],
    decays: Sequence[float],
    reference: tuple[int, float, float] | None = None,
    loss_ylim: tuple[float, float] = (2.0, 4.5),
    run_fn: Callable[[int, float, float], tuple[Sequence[float], float]] | None = None,
    explorer_id: str = "lr-schedule",
    static: bool | None = None,
) -> Any:
    """Warmup, peak and decay of the learning-rate schedule, and the loss of the run each gives.

    ``runs`` maps (warmup steps, peak lr, decay) to (training loss at every step, final
    validation loss), e.g. as stored by ``experiments/lr_schedules.py``; ``decay`` is the ratio
    min_lr / peak (1.0: no decay). ``base`` is the `gptlib.train.TrainConfig` of those runs (its
    ``max_steps``). A frame shows the schedule of `gptlib.train.lr_at` and the training loss
    (moving average over 5 steps), with ``reference`` in grey. In a live kernel the sliders are
    continuous, and a setting with no stored run is trained by ``run_fn`` (when given).
    """
    from gptlib.train import lr_at

    runs = {(int(w), float(p), float(d)): v for (w, p, d), v in runs.items()}

    def get(warmup: int, peak: float, decay: float) -> tuple[list[float], list[float], float]:
        key = (int(warmup), float(peak), float(decay))
        if key not in runs:
            if run_fn is None:
                raise KeyError(f"no stored run for warmup {key[0]}, peak {key[1]}, decay {key[2]}")
            runs[key] = run_fn(*key)
        cfg = dataclasses.replace(base, warmup_steps=key[0], lr=key[1], min_lr=key[1] * key[2])
        losses, val = runs[key]
        return [lr_at(t, cfg) for t in range(cfg.max_steps)], list(losses), float(val)

    def smooth(v: list[float], k: int = 5) -> list[float]:
        return [
            sum(v[max(0, i - k + 1) : i + 1]) / (i + 1 - max(0, i - k + 1)) for i in range(len(v))
        ]

    lr_lim = (min(peaks) * min(decays) / 2, max(peaks) * 2)

    def frame(warmup: int, peak: float, decay: float) -> str:
        lrs, losses, val = get(warmup, peak, decay)
        lr_series, loss_series = [], []
        if reference is not None:
            r_lrs, r_losses, r_val = get(*reference)
            lr_series.append(("reference", r_lrs, "#b0b0b0"))
            loss_series.append((f"reference: val. {r_val:.3f}", smooth(r_losses), "#b0b0b0"))
        lr_series.append(("this setting", lrs, "#1f77b4"))
        loss_series.append((f"this setting: val. {val:.3f}", smooth(losses), "#1f77b4"))
        return (
            f"<p>validation loss after {len(losses)} steps: <b>{val:.3f}</b> nats/token</p>"
            '<div style="display:flex;flex-wrap:wrap;gap:8px">'
            + line_chart_svg(lr_series, "optimizer step", "learning rate", lr_lim, log_y=True)
            + line_chart_svg(loss_series, "optimizer step", "training loss (nats/token)", loss_ylim)
            + "</div>"
        )

    def decay_label(d: float) -> str:
        return "none" if d >= 1 else f"cosine to {d:g} x peak"

    controls = [
        Control("warmup", "warmup steps", tuple(warmups)),
        Control("peak", "peak lr", tuple(peaks), tuple(f"{p:.0e}" for p in peaks)),
        Control("decay", "decay", tuple(decays), tuple(decay_label(d) for d in decays)),
    ]
    if reference is not None:
        controls = [
            dataclasses.replace(c, default=v) for c, v in zip(controls, reference, strict=True)
        ]
    if run_fn is not None and not _is_static(static):
        import ipywidgets as w

        opts = {"continuous_update": False, "style": {"description_width": "initial"}}
        live = [
            w.IntSlider(
                value=controls[0].default,
                min=0,
                max=base.max_steps // 2,
                description="warmup steps",
                **opts,
            ),
            w.FloatLogSlider(
                value=controls[1].default,
                base=10,
                min=-4,
                max=-1,
                step=0.25,
                description="peak lr",
                **opts,
            ),
            w.FloatSlider(
                value=controls[2].default,
                min=0.0,
                max=1.0,
                step=0.05,
                description="min_lr / peak",
                **opts,
            ),
        ]
        controls = [dataclasses.replace(c, live=x) for c, x in zip(controls, live, strict=True)]
    return explorer(explorer_id, controls, frame, static=static)


def _nice_ticks(lo: float, hi: float, log: bool) -> list[float]:
    """Tick positions inside [lo, hi]: 1-2-5 steps, or 1 and 3 times powers of ten on a log axis.

    >>> _nice_ticks(2.0, 4.5, log=False)
    [2.0, 2.5, 3.0, 3.5, 4.0, 4.5]
    >>> _nice_ticks(1e-4, 0.05, log=True)
    [0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03]
    """
    if log:
        ticks = []
        for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1):
            ticks += [m * 10.0**e for m in (1, 3)]
        return [float(f"{t:.1g}") for t in ticks if lo <= t <= hi]
    raw = (hi - lo) / 6
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    n = int(math.floor((hi - first) / step + 1e-9)) + 1
    return [round(first + i * step, 10) for i in range(n)]


def line_chart_svg(
    series: Sequence[tuple[str, Sequence[float], str]],
    xlabel: str,
    ylabel: str,
    ylim: tuple[float, float],
    log_y: bool = False,
    width: int = 380,
    height: int = 230,
) -> str:
    """A small inline SVG line chart: ``series`` are (legend label, y at x = 0, 1, ..., colour).

    Drawn by hand rather than by matplotlib so a frame weighs a few kB and its bytes depend on
    the numbers alone.
    """
    left, right, top, bottom = 58, 10, 10, 40
    n = max(len(ys) for _, ys, _ in series)
    y0, y1 = (math.log10(ylim[0]), math.log10(ylim[1])) if log_y else ylim

    def px(i: float) -> float:
        return left + (width - left - right) * i / max(n - 1, 1)

    def py(y: float) -> float:
        v = math.log10(max(y, 1e-30)) if log_y else y
        v = min(max(v, y0), y1)  # clip to the axes
        return top + (height - top - bottom) * (1 - (v - y0) / (y1 - y0))

    out = [
        f'<svg width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-size="10" font-family="sans-serif">',
        f'<rect x="{left}" y="{top}" width="{width - left - right}" '
        f'height="{height - top - bottom}" fill="none" stroke="#444"/>',
    ]
    for t in _nice_ticks(*ylim, log=log_y):
        y = py(t)
        out.append(
            f'<line x1="{left - 4}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>'
        )
        out.append(f'<text x="{left - 6}" y="{y + 3:.1f}" text-anchor="end">{t:g}</text>')
    for t in _nice_ticks(0, n, log=False):
        x = px(t)
        out.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{height - bottom}" '
            f'y2="{height - bottom + 4}" stroke="#444"/>'
        )
        out.append(
            f'<text x="{x:.1f}" y="{height - bottom + 14}" text-anchor="middle">{t:g}</text>'
        )
    out.append(
        f'<text x="{(left + width - right) / 2}" y="{height - 6}" '
        f'text-anchor="middle">{html.escape(xlabel)}</text>'
    )
    out.append(
        f'<text transform="translate(12 {(top + height - bottom) / 2}) rotate(-90)" '
        f'text-anchor="middle">{html.escape(ylabel)}</text>'
    )
    for k, (label, ys, colour) in enumerate(series):
        points = " ".join(f"{px(i):.1f},{py(y):.1f}" for i, y in enumerate(ys))
        out.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2"/>')
        ly = top + 14 + 14 * k
        out.append(
            f'<line x1="{width - right - 150}" x2="{width - right - 132}" y1="{ly - 3}" '
            f'y2="{ly - 3}" stroke="{colour}" stroke-width="2"/>'
        )
        out.append(f'<text x="{width - right - 128}" y="{ly}">{html.escape(label)}</text>')
    out.append("</svg>")
    return "".join(out)
