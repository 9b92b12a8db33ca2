"""How a route classifier is extended: :class:`ClassExtensionConfig` and its choices.

Kept apart from :mod:`transitnet.extend_classes` (which runs the extension) so the CLI
and experiments can build and validate a configuration without the training code.
"""

from __future__ import annotations

from dataclasses import dataclass

from transitnet.tasks.class_extension import MODES

EXTENSION_MODES = (*MODES, "prototype")
ALIGNS = ("none", "wa", "bic")
INITS = ("imprint", "mean", "low_bias", "random")


@dataclass
class ClassExtensionConfig:
    """How to extend.

    Attributes:
        new_classes: ``"auto"`` (line keys of the new data the classifier lacks) or keys.
        init: New-row init: ``imprint``, ``mean``, ``low_bias`` or ``random``.
        mode: ``none``, ``frozen``, ``replay``, ``naive`` or ``prototype``.
        align: After training: ``none``, ``wa`` (weight aligning) or ``bic``
            (needs old data: ``replay`` only). WA on a linear head rescales the new rows
            to the old rows' mean norm; on a cosine head (row norms do not count) it is
            the statistical WA of
            :meth:`~transitnet.tasks.class_extension.ClassExtensionTask.align_by_claim_rate`:
            one offset on the new biases, so that at most ``wa_claim_rate`` of the old
            classes' pseudo-features (drawn from their stored statistics) go to new ones;
            only with the base encoder (``frozen``, ``none``), whose features the
            statistics describe: after ``replay`` or ``naive`` it is skipped (warning).
        shots: Example trajectories per new class (None: every one in the new data).
        mask: Add the new classes masked; training modes unmask them after training.
        max_steps: Optimizer steps.
        batch_size: Windows per step.
        new_row_lr: Learning rate of the new rows.
        layer_lr: Learning rate of the encoder and old rows (``replay``, ``naive``).
        distill_weight: Distillation weight (``replay``).
        temperature: Distillation temperature.
        train_new_bias: Train the new biases in ``frozen`` mode (with pseudo-features).
        pseudo_ratio: Pseudo-features of old classes per new window (``frozen``; 0: none).
        full_covariance: Pseudo-features (and statistical WA) draw from each old class's
            full covariance when stored, not only its per-dimension stds.
        mixture: They draw from each old class's stored sub-centres instead (takes
            precedence over ``full_covariance``).
        replay_per_class: Old windows per old class in the replay buffer.
        old_negatives: ``frozen`` mode trains the new rows on the replay buffer too (old
            data needed; the encoder and old rows still stay frozen).
        bic_per_class: Held-out windows per class for BiC.
        wa_claim_rate: Target claim rate of statistical WA (cosine head).
        wa_per_class: Statistical WA gives each new class its own offset (a share
            ``wa_claim_rate / k`` each) instead of one shared offset.
        claim_gate: After aligning, the new classes may only take windows where the old
            classes' largest softmax probability is below its ``claim_gate``-quantile over
            the base model's correctly classified training windows
            (:mod:`~transitnet.models.claim_gate`; 0: off, at most 0.5; not in
            ``prototype`` mode, which answers by class mean). The default
            0.2 with ``wa_claim_rate`` 0.0005 was chosen on validation (two seeds, Austin
            and Auckland; ``benchmarks/notes/route-classifier-gate.md``).
        min_windows: ``auto`` only adds lines with at least this many windows.
        seed: Seed for sampling, init and training.
        progress: Show a progress bar while training.
    """

    new_classes: str | list[str] = "auto"
    init: str = "imprint"
    mode: str = "frozen"
    align: str = "wa"
    shots: int | None = None
    mask: bool = False
    max_steps: int = 200
    batch_size: int = 128
    new_row_lr: float = 1e-2
    layer_lr: float = 3e-4
    distill_weight: float = 1.0
    temperature: float = 2.0
    train_new_bias: bool = True
    pseudo_ratio: float = 1.0
    full_covariance: bool = True
    mixture: bool = False
    replay_per_class: int = 20
    old_negatives: bool = False
    bic_per_class: int = 10
    wa_claim_rate: float = 0.0005
    wa_per_class: bool = False
    claim_gate: float = 0.2
    min_windows: int = 10
    seed: int = 0
    progress: bool = False

    def check(self) -> None:
        """Raise ValueError for an unknown init, mode or align, or BiC without old data."""
        if self.init not in INITS or self.mode not in EXTENSION_MODES or self.align not in ALIGNS:
            raise ValueError(
                f"init must be one of {INITS}, mode one of {EXTENSION_MODES}, align one of "
                f"{ALIGNS}; got {self.init!r}, {self.mode!r}, {self.align!r}"
            )
        if self.align == "bic" and self.mode != "replay":
            raise ValueError("BiC is fitted on held-out old and new windows: use mode 'replay'")
        if self.shots is not None and self.shots < 1:
            raise ValueError(f"shots must be ≥ 1, got {self.shots}")
        if not 0.0 <= self.claim_gate <= 0.5:
            raise ValueError(f"claim_gate must be in [0, 0.5], got {self.claim_gate}")
        if not 0.0 <= self.wa_claim_rate <= 1.0:
            raise ValueError(f"wa_claim_rate must be in [0, 1], got {self.wa_claim_rate}")
