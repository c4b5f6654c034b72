"""Training: schedule, decay groups, one step, learning, exact resume, NaN guard, config."""

import csv
import math

import pytest
import torch

from gptlib.checkpoint import CheckpointError, load_checkpoint
from gptlib.data import get_batch
from gptlib.model import GPT, GPTConfig
from gptlib.train import (
    TrainConfig,
    TrainingDivergedError,
    configure_optimizer,
    decay_groups,
    estimate_loss,
    lr_at,
    train,
    train_step,
)

TEXT = "to be or not to be, that is the question. " * 60
CHARS = sorted(set(TEXT))
IDS = torch.tensor([CHARS.index(c) for c in TEXT])
TRAIN, VAL = IDS[:2200], IDS[2200:]
MODEL = GPTConfig(vocab_size=len(CHARS), block_size=16, n_layer=2, n_head=2, n_embd=32)
FAST = dict(
    batch_size=8,
    lr=3e-3,
    min_lr=3e-4,
    warmup_steps=2,
    eval_interval=1000,
    eval_iters=2,
    log_interval=1,
    device="cpu",
)


def _model(seed=0, **overrides):
    torch.manual_seed(seed)
    return GPT(GPTConfig(**{**MODEL.to_dict(), **overrides}))


def _batches(k, b, seed=0):
    """k micro-batches of b windows of TRAIN, and the same rows as one batch (x, y) of k*b."""
    x, y = get_batch(TRAIN, k * b, MODEL.block_size, torch.Generator().manual_seed(seed))
    return [(x[i : i + b], y[i : i + b]) for i in range(0, k * b, b)], (x, y)


def _full_batch_gradient(x, y):
    """Loss and gradient of a fresh ``_model()`` on the whole batch in one pass (autograd)."""
    model = _model()
    _, loss = model(x, y)
    return loss.item(), torch.autograd.grad(loss, list(model.parameters()))


def _flat(tensors):
    return torch.cat([t.flatten() for t in tensors])


@pytest.mark.parametrize("k, b", [(1, 8), (2, 4), (4, 2), (8, 1)])
def test_train_step_k_micro_batches_equal_one_batch_of_k_times_b(k, b):
    """Accumulating k micro-batches of b rows gives the gradient of one batch of k*b rows.

    Plain SGD moves each weight by exactly -lr * gradient, so with lr = 0.5 and no clipping the
    change of the weights must be half the full-batch gradient that autograd computes directly.
    """
    micro, (x, y) = _batches(k, b)
    loss, grads = _full_batch_gradient(x, y)
    model = _model()
    start = [p.detach().clone() for p in model.parameters()]
    sgd = torch.optim.SGD(model.parameters(), lr=1.0)
    stats = train_step(model, sgd, micro, lr=0.5, grad_clip=None)
    assert [g["lr"] for g in sgd.param_groups] == [0.5]
    assert stats.loss == pytest.approx(loss, rel=1e-5)
    assert stats.grad_norm == pytest.approx(_flat(grads).norm().item(), rel=1e-5)
    for (name, p), p0, g in zip(model.named_parameters(), start, grads, strict=True):
        torch.testing.assert_close(p0 - p.detach(), 0.5 * g, rtol=1e-4, atol=1e-6, msg=name)


def test_train_step_clips_the_gradient_to_grad_clip():
    """Clipping rescales the whole gradient to norm c (Pascanu et al. 2013): g * c / |g|."""
    micro, (x, y) = _batches(2, 4, seed=1)
    _, grads = _full_batch_gradient(x, y)
    norm = _flat(grads).norm().item()
    model = _model()
    start = _flat(p.detach().clone() for p in model.parameters())
    stats = train_step(
        model, torch.optim.SGD(model.parameters(), lr=1.0), micro, grad_clip=norm / 4
    )
    assert stats.grad_norm == pytest.approx(norm, rel=1e-5)  # measured before clipping
    update = start - _flat(p.detach() for p in model.parameters())
    torch.testing.assert_close(update, _flat(grads) / 4, rtol=1e-3, atol=1e-6)


def test_train_step_skips_a_non_finite_update():
    model = _model()
    with torch.no_grad():
        model.h[0].mlp.c_fc.weight[0, 0] = float("nan")  # every loss is NaN from now on
    before = [p.detach().clone() for p in model.parameters()]
    adamw = torch.optim.AdamW(model.parameters())
    stats = train_step(model, adamw, _batches(2, 2)[0])
    assert math.isnan(stats.loss) and not stats.finite
    assert adamw.state == {}  # no AdamW step was taken, so no moments exist
    for p, q in zip(model.parameters(), before, strict=True):
        torch.testing.assert_close(p.detach(), q, rtol=0, atol=0, equal_nan=True)
    with pytest.raises(ValueError, match="at least one"):
        train_step(model, adamw, [])


def test_lr_schedule_hand_computed():
    """W=10 warmup steps to lr=1e-3, then cosine to 1e-4 at S=110.

    warmup: lr*(t+1)/W -> t=0: 1e-4, t=4: 5e-4, t=9: 1e-3 (end of warmup);
    cosine: t=60 is half way, cos(pi/2)=0 -> 1e-4 + 0.5*9e-4 = 5.5e-4; t=110 -> min_lr.
    """
    cfg = TrainConfig(max_steps=110, lr=1e-3, min_lr=1e-4, warmup_steps=10)
    expected = {0: 1e-4, 4: 5e-4, 9: 1e-3, 10: 1e-3, 60: 5.5e-4, 110: 1e-4, 500: 1e-4}
    for step, lr in expected.items():
        assert lr_at(step, cfg) == pytest.approx(lr, rel=1e-12), step
    # a quarter of the way: 1e-4 + 0.5 * 9e-4 * (1 + cos(pi/4))
    assert lr_at(35, cfg) == pytest.approx(1e-4 + 4.5e-4 * (1 + math.sqrt(0.5)))
    no_warmup = TrainConfig(max_steps=100, lr=1e-3, min_lr=0.0, warmup_steps=0)
    assert lr_at(0, no_warmup) == pytest.approx(1e-3)


def test_weight_decay_only_on_matrices():
    model = _model()
    decay, no_decay = decay_groups(model)
    assert set(decay) == {"wte.weight", "wpe.weight"} | {
        f"h.{i}.{m}.weight"
        for i in range(2)
        for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
    }
    assert "lm_head.weight" not in decay + no_decay  # tied to wte: one parameter, listed once
    assert all(n.endswith(".bias") or ".ln_" in n or n.startswith("ln_f") for n in no_decay)
    opt = configure_optimizer(model, TrainConfig(weight_decay=0.1))
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))


def test_loss_falls_on_a_tiny_corpus():
    result = train(_model(), TRAIN, VAL, TrainConfig(max_steps=100, **FAST), progress=False)
    first, last = result.history[0]["train_loss"], result.history[-1]["train_loss"]
    assert first == pytest.approx(math.log(len(CHARS)), abs=0.5)  # untrained: about ln V
    assert last < 0.5 * first
    assert result.val_loss < 0.5 * first and result.val_perplexity == math.exp(result.val_loss)


def test_resume_is_bit_identical(tmp_path):
    """20 steps straight == 10 steps, a crash at step 13, then a resume from the step-10 save."""
    cfg = TrainConfig(max_steps=20, checkpoint_interval=10, **{**FAST, "eval_interval": 7})
    straight = _model(dropout=0.1)  # dropout: the global RNG must be restored too
    ref = train(straight, TRAIN, VAL, cfg, out_dir=tmp_path / "a", progress=False)

    def crash(step, metrics):
        if step == 13:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(
            _model(dropout=0.1),
            TRAIN,
            VAL,
            cfg,
            out_dir=tmp_path / "b",
            progress=False,
            callback=crash,
        )
    fresh = _model(seed=99, dropout=0.1)  # new objects, other initial weights
    resumed = train(fresh, TRAIN, VAL, cfg, out_dir=tmp_path / "b", resume=True, progress=False)
    for (name, p), q in zip(straight.named_parameters(), fresh.parameters(), strict=True):
        assert torch.equal(p, q), name
    with open(tmp_path / "b" / "log.csv") as f:
        steps = [int(r["step"]) for r in csv.DictReader(f)]
    assert steps == list(range(1, 21))  # rows 11-13 of the crashed run were dropped
    assert [r["train_loss"] for r in resumed.history] == [r["train_loss"] for r in ref.history]
    assert resumed.val_loss == ref.val_loss


def test_nan_guard_stops_and_keeps_last_good_checkpoint(tmp_path):
    model = _model()
    calls = []

    def poison(module, inputs, output):  # from the 5th forward pass on, the loss is NaN
        calls.append(1)
        logits, loss = output
        return (logits, loss * float("nan")) if len(calls) >= 5 else output

    model.register_forward_hook(poison)
    cfg = TrainConfig(max_steps=10, checkpoint_interval=3, **FAST)
    with pytest.raises(TrainingDivergedError) as err:
        train(model, TRAIN, VAL, cfg, out_dir=tmp_path, progress=False)
    message = str(err.value)
    assert "training diverged at step 5: the loss is nan" in message
    assert f"last good checkpoint (step 3) in {tmp_path} is kept" in message
    assert err.value.step == 5 and err.value.checkpoint_step == 3
    assert all(torch.isfinite(p).all() for p in model.parameters())  # step 5 was not applied
    saved = load_checkpoint(tmp_path)
    assert saved.step == 3
    assert all(torch.isfinite(p).all() for p in saved.model.parameters())


def test_grad_accumulation_matches_full_batch():
    """batch 4 x 2 micro-batches == batch 8 in one go: the same rows, the same mean gradient."""
    full, accum = _model(), _model()
    base = {**FAST, "warmup_steps": 0}
    train(full, TRAIN, VAL, TrainConfig(max_steps=1, **base), progress=False)
    train(
        accum,
        TRAIN,
        VAL,
        TrainConfig(max_steps=1, **{**base, "batch_size": 4, "grad_accum": 2}),
        progress=False,
    )
    start = _model()
    for p, q in zip(full.parameters(), accum.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-6)
    assert not torch.equal(full.wte.weight, start.wte.weight)  # an update did happen


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"min_lr": 0.1, "lr": 0.01}, "min_lr=0.1 must lie between 0 and lr=0.01"),
        ({"warmup_steps": 20, "max_steps": 10}, "warmup_steps=20 is longer than max_steps=10"),
        ({"grad_accum": 0}, "grad_accum must be an integer >= 1, got 0"),
        ({"max_steps": 0}, "max_steps must be an integer >= 1"),
        ({"lr": -1.0}, "lr must be positive"),
        ({"betas": (0.9, 1.5)}, "betas must be two numbers in"),
    ],
)
def test_config_validation_messages(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**kwargs)


def test_config_dict_round_trip_and_unknown_keys():
    cfg = TrainConfig(max_steps=5, warmup_steps=1, betas=[0.8, 0.9])
    assert cfg.betas == (0.8, 0.9)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match=r"unknown TrainConfig field\(s\) \['lrr'\]"):
        TrainConfig.from_dict({"lrr": 1.0})


def test_resume_and_overwrite_guards(tmp_path):
    cfg = TrainConfig(max_steps=2, **FAST)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        train(_model(), TRAIN, VAL, cfg, out_dir=tmp_path, resume=True, progress=False)
    train(_model(), TRAIN, VAL, cfg, out_dir=tmp_path, progress=False)
    with pytest.raises(FileExistsError, match="already holds a checkpoint"):
        train(_model(), TRAIN, VAL, cfg, out_dir=tmp_path, progress=False)


def test_callback_stops_early_and_saves(tmp_path):
    seen = []

    def stop_at_3(step, metrics):
        seen.append(metrics["lr"])
        return step == 3

    cfg = TrainConfig(max_steps=10, **FAST)
    result = train(_model(), TRAIN, VAL, cfg, out_dir=tmp_path, progress=False, callback=stop_at_3)
    assert result.stopped_early and result.step == 3 and len(seen) == 3
    assert load_checkpoint(tmp_path).step == 3


def test_estimate_loss_is_the_eval_mode_mean_over_the_generators_batches():
    """By hand: draw the same batches from the same seed and average the losses without dropout.

    The model has dropout 0.5, so a loss computed in training mode would come out different.
    """
    model, cfg = _model(dropout=0.5), TrainConfig(**FAST)
    got = estimate_loss(model, {"val": VAL}, cfg, torch.Generator().manual_seed(3))
    assert model.training  # restored after evaluating in eval mode
    gen, losses = torch.Generator().manual_seed(3), []
    with torch.no_grad():
        for _ in range(cfg.eval_iters):
            x, y = get_batch(VAL, cfg.batch_size, MODEL.block_size, gen)
            losses.append(model.eval()(x, y)[1].item())
    expected = sum(losses) / len(losses)
    assert got == {
        "val_loss": pytest.approx(expected, rel=1e-6),
        "val_perplexity": pytest.approx(math.exp(expected), rel=1e-6),
    }


def test_too_short_corpus_and_bad_ids():
    cfg = TrainConfig(max_steps=2, **FAST)
    with pytest.raises(ValueError, match="val_tokens has 10 tokens"):
        train(_model(), TRAIN, VAL[:10], cfg, progress=False)
    with pytest.raises(ValueError, match="outside the model's vocabulary"):
        train(_model(), TRAIN + 100, VAL, cfg, progress=False)
