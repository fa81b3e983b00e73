"""Built-in lint rules: one function each, registered with its id.

Each takes the Facts and yields Findings whose messages carry the numbers and the fix.
Thresholds are the usual ranges for LoRA fine-tuning; they are named here so a
finding can say what it compared against.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from ..spec.rules import Facts, check_rule, hard_rules, rule_env
from ..trainers.registry import capabilities
from . import Finding

RuleFn = Callable[[Facts], Iterable[Finding]]
_RULES: dict[str, RuleFn] = {}

ADAM_LORA_LR = (1e-6, 2e-3)  # usual peak LR for Adam-family LoRA fine-tuning of pretrained weights
TINY_ADAM_LR_HIGH = 1e-2  # a tiny model built from a config starts from random weights: it takes more
ADAM_LR_BROKEN = 3e-2  # above this Adam updates are near-certain to blow up
SGD_LR = (1e-3, 1.0)
SGD_LR_BROKEN = 10.0
HIGH_LR = 1e-3  # "high" for the no-accumulation rule
ALPHA_EQ_R_LR = 1e-4  # alpha == r above this peak: a scale of 1 with an LR that needs a gentler adapter
SAFER_RATIOS = (0.5, 2.0, 0.25, 4.0)  # alpha/r values the alpha == r fix may suggest, first allowed wins
PEAK_RATIO_ERROR = 10.0
PEAK_RATIO_WARN = 2.0
WARMUP_VANISHING = 0.005  # share of training
ALPHA_RATIO_RANGE = (0.25, 8.0)
LORA_WEIGHT_DECAY = 0.1


def rule(rule_id: str) -> Callable[[RuleFn], RuleFn]:
    def wrap(fn: RuleFn) -> RuleFn:
        _RULES[rule_id] = fn
        return fn

    return wrap


def builtin_rules() -> list[RuleFn]:
    return list(_RULES.values())


def rule_ids() -> list[str]:
    return list(_RULES)


def _lr(x: float) -> str:
    return f"{x:.3g}"


@rule("peak-lr-mismatch")
def peak_vs_configured(f: Facts) -> Iterator[Finding]:
    """A formula-driven schedule whose real peak is far from the learning_rate the spec states."""
    configured, peak = f.spec.train.learning_rate, f.peak
    if peak <= 0:
        yield Finding("peak-lr-mismatch", "error", "the schedule never rises above 0", "check train.schedule")
        return
    ratio = peak / configured
    if max(ratio, 1 / ratio) < PEAK_RATIO_WARN:
        return
    times = f"{ratio:.0f}x" if ratio >= 1 else f"1/{1 / ratio:.0f}x"
    source = f" (train.lr_formula {f.spec.train.lr_formula!r})" if f.spec.train.lr_formula else ""
    severity = "error" if max(ratio, 1 / ratio) >= PEAK_RATIO_ERROR else "warning"
    yield Finding(
        "peak-lr-mismatch",
        severity,
        f"the schedule peaks at {_lr(peak)}{source}, {times} train.learning_rate {_lr(configured)}",
        f"if {_lr(configured)} is what you meant, fix the formula (a Noam peak is "
        f"d_model^-0.5 * warmup^-0.5, not d_model^-0.5); otherwise set train.learning_rate: {_lr(peak)}",
    )


@rule("lr-range")
def lr_range(f: Facts) -> Iterator[Finding]:
    opt = f.spec.train.optimizer
    low, high = SGD_LR if opt == "sgd" else ADAM_LORA_LR
    if opt != "sgd" and f.spec.model.tiny is not None:
        high = TINY_ADAM_LR_HIGH
    broken = SGD_LR_BROKEN if opt == "sgd" else ADAM_LR_BROKEN
    peak = f.peak
    if peak > broken:
        yield Finding(
            "lr-range",
            "error",
            f"peak LR {_lr(peak)} is above {_lr(broken)}, where {opt} diverges",
            f"use a peak between {_lr(low)} and {_lr(high)}",
        )
    elif not low <= peak <= high:
        yield Finding(
            "lr-range",
            "warning",
            f"peak LR {_lr(peak)} is outside the usual {_lr(low)}..{_lr(high)} for LoRA with {opt}"
            f"{' on a tiny random-init model' if f.spec.model.tiny is not None and opt != 'sgd' else ''}",
            "check the value; sweep it if unsure",
        )


@rule("warmup-length")
def warmup_length(f: Facts) -> Iterator[Finding]:
    warmup, total = f.plan.schedule.warmup_steps, f.plan.total_steps
    if warmup >= total:
        yield Finding(
            "warmup-length",
            "error",
            f"warmup of {warmup} steps is not shorter than the {total} steps of training: the peak LR is never reached",
            f"set train.warmup_steps well below {total} (e.g. {max(1, total // 20)})",
        )
    elif warmup > total / 2:
        yield Finding(
            "warmup-length",
            "warning",
            f"warmup takes {warmup} of {total} steps ({warmup / total:.0%})",
            "a warmup of 1-10% of training is usual",
        )
    elif 0 < warmup < WARMUP_VANISHING * total:
        yield Finding(
            "warmup-length",
            "warning",
            f"warmup of {warmup} steps is {warmup / total:.2%} of the {total} steps: too short to matter",
            f"use at least {round(WARMUP_VANISHING * total)} steps or none",
        )


@rule("anneal-steps")
def anneal_steps(f: Facts) -> Iterator[Finding]:
    s, total = f.plan.schedule, f.plan.total_steps
    if s.anneal_steps and s.name not in ("step_anneal", "noam"):
        yield Finding(
            "anneal-steps",
            "warning",
            f"train.anneal_steps {list(s.anneal_steps)} are ignored by schedule {s.name}",
            "use schedule step_anneal or drop them",
        )
        return
    late = [m for m in s.anneal_steps if m > total]
    if late:
        yield Finding(
            "anneal-steps",
            "warning",
            f"anneal step(s) {late} come after the last step {total}: they never apply",
            f"move them inside 1..{total}",
        )
    early = [m for m in s.anneal_steps if m <= s.warmup_steps]
    if early:
        yield Finding(
            "anneal-steps",
            "warning",
            f"anneal step(s) {early} fall inside the {s.warmup_steps}-step warmup",
            "anneal after the warmup ends",
        )
    if s.name == "cosine_with_restarts" and s.num_cycles > max(1, total - s.warmup_steps) // 2:
        yield Finding(
            "anneal-steps",
            "warning",
            f"{s.num_cycles} cosine cycles in {total - s.warmup_steps} steps",
            "use fewer cycles",
        )


@rule("end-lr-above-peak")
def end_above_peak(f: Facts) -> Iterator[Finding]:
    end, peak = f.spec.train.end_lr, f.plan.schedule.peak_lr
    if f.plan.schedule.name not in ("constant", "step_anneal", "noam") and end > peak:
        yield Finding(
            "end-lr-above-peak",
            "error",
            f"train.end_lr {_lr(end)} is above the peak {_lr(peak)}: the schedule rises instead of decaying",
            f"set train.end_lr below {_lr(peak)} (e.g. {_lr(peak / 10)})",
        )


@rule("lora-shape")
def lora_shape(f: Facts) -> Iterator[Finding]:
    r, alpha = f.spec.lora.r, f.spec.lora.alpha
    if alpha == r:
        sev = "warning" if f.peak > ALPHA_EQ_R_LR else "info"
        ratio = allowed_ratio(f)
        yield Finding(
            "lora-shape",
            sev,
            f"lora.alpha == lora.r ({r}): the adapter scale alpha/r is 1"
            f"{f', with a peak LR {_lr(f.peak)} above {_lr(ALPHA_EQ_R_LR)}' if sev == 'warning' else ''}",
            f"use alpha = {ratio:g}r (lora.alpha: {ratio * r:g}), a ratio the spec's rules allow; or lower the LR",
        )
    ratio = alpha / r
    if not ALPHA_RATIO_RANGE[0] <= ratio <= ALPHA_RATIO_RANGE[1]:
        yield Finding(
            "lora-shape",
            "warning",
            f"alpha/r = {ratio:.3g} (alpha {alpha:g}, r {r}) is extreme; usual "
            f"range {ALPHA_RATIO_RANGE[0]}..{ALPHA_RATIO_RANGE[1]}",
            "bring alpha within 0.25r..8r",
        )
    if f.hidden_size is not None and r > f.hidden_size:
        yield Finding(
            "lora-shape",
            "error",
            f"lora.r {r} is above the model's hidden size {f.hidden_size}: "
            f"the extra rank adds parameters and nothing else",
            f"use lora.r <= {f.hidden_size}",
        )


def allowed_ratio(f: Facts) -> float:
    """The first of SAFER_RATIOS whose alpha breaks none of the spec's hard rules (rules naming a sweep
    helper cannot be judged here and do not count); 0.5 when every one breaks some rule."""
    for ratio in SAFER_RATIOS:
        spec = f.spec.with_overrides({"lora.alpha": ratio * f.spec.lora.r}, "lint")
        env = rule_env(Facts(spec, f.plan, f.hidden_size))
        if not any(check_rule(rule, env, spec.source, "rules") for rule in hard_rules(spec)):
            return ratio
    return SAFER_RATIOS[0]


@rule("optimizer-lr")
def optimizer_lr(f: Facts) -> Iterator[Finding]:
    t, peak = f.spec.train, f.peak
    if t.optimizer == "adamw8bit" and peak > t.max_lr_8bit:
        yield Finding(
            "optimizer-lr",
            "warning",
            f"adamw8bit at peak LR {_lr(peak)}, above train.max_lr_8bit {_lr(t.max_lr_8bit)}: with LoRA, "
            f"8-bit optimizer states go NaN at high learning rates",
            f"lower the LR to {_lr(t.max_lr_8bit)} or less, or use adamw",
        )
    if t.grad_accum == 1 and peak > HIGH_LR and f.plan.effective_batch < 16:
        yield Finding(
            "optimizer-lr",
            "warning",
            f"effective batch {f.plan.effective_batch} with no accumulation "
            f"at peak LR {_lr(peak)}: noisy, large updates",
            "raise train.grad_accum or lower the LR",
        )
    if t.precision == "fp16" and t.optimizer != "sgd" and t.adam_eps < 1e-8:
        yield Finding(
            "optimizer-lr",
            "warning",
            f"adam_eps {t.adam_eps:g} under fp16, whose smallest normal value is 6.1e-5",
            "use adam_eps >= 1e-8 or bf16",
        )
    if t.weight_decay > LORA_WEIGHT_DECAY:
        yield Finding(
            "optimizer-lr",
            "warning",
            f"weight_decay {t.weight_decay:g} on LoRA weights pulls the adapter toward zero",
            f"use at most {LORA_WEIGHT_DECAY:g} (often 0)",
        )


SHORT_RUN = 20  # optimizer steps: fewer and a LoRA has barely moved (the starter spec once wrote 8)


@rule("run-too-short")
def run_too_short(f: Facts) -> Iterator[Finding]:
    """A handful of optimizer steps learns nothing a user can see; an eval interval past the end never evaluates."""
    p, t = f.plan, f.spec.train
    if not capabilities(f.spec.trainer.type).in_process:
        return  # a script decides its own length: tunelog's plan of it is a guess
    if p.total_steps < SHORT_RUN:
        yield Finding(
            "run-too-short",
            "warning",
            f"{p.total_steps} optimizer steps in all ({p.n_samples} samples, effective batch {p.effective_batch}): "
            f"too few for the adapter to learn what the data shows",
            f"raise train.epochs (or train.max_steps) to at least {SHORT_RUN} steps, or lower train.batch_size",
        )
    if f.spec.data.eval and t.eval_every and t.eval_every > p.total_steps:
        yield Finding(
            "eval-never",
            "warning",
            f"train.eval_every {t.eval_every} is past the run's end (step {p.total_steps}): no evaluation runs",
            f"set train.eval_every to about {max(1, p.total_steps // 4)} (a few evaluations per run)",
        )


@rule("plan")
def plan_summary(f: Facts) -> Iterator[Finding]:
    p, t = f.plan, f.spec.train
    yield Finding(
        "plan",
        "info",
        f"effective batch {p.effective_batch} (batch {t.batch_size} x accum {t.grad_accum});"
        f" {p.n_samples} samples -> {p.steps_per_epoch} optimizer steps per epoch, "
        f"{p.total_steps} in all ({p.epochs:.2f} epochs); {p.schedule.name} peaks at "
        f"{_lr(f.peak)}",
    )
