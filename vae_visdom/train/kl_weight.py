"""The weight beta of the KL term in the objective minimised: recon + beta * KL, with an optional warm-up.

beta = 1 is the ELBO (Kingma & Welling 2014); beta > 1 the beta-VAE (Higgins et al. 2017). The warm-up
(Bowman et al. 2016, "Generating sentences from a continuous space") raises the weight linearly from
0 to beta over the first `warmup` optimizer steps of the run: step t (counted from 0) trains with
beta * min(1, t / warmup). A beta typed in the control panel while the warm-up is in force is the new
end point of the ramp; after the warm-up it is the weight itself.
"""
from __future__ import annotations


class KLWeight:
    """The target beta, the warm-up length, and the weight in force for the step about to be taken."""

    def __init__(self, beta: float = 1.0, warmup: int = 0):
        self.beta, self.warmup = float(beta), int(warmup)
        self.current = self.at(0)
        # once the weight has differed from 1, the trainer tracks the objective apart from the -ELBO
        self.weighted = self.current != 1.0 or self.beta != 1.0

    def at(self, step: int) -> float:
        """The weight for the step that follows `step` steps taken."""
        if self.warmup > 0 and step < self.warmup:
            return self.beta * step / self.warmup
        return self.beta

    def advance(self, step: int) -> float:
        """Set and return the weight for the next step (called before every step)."""
        self.current = self.at(step)
        if self.current != 1.0:
            self.weighted = True
        return self.current

    def set_beta(self, beta: float, step: int) -> None:
        """A live change (control panel, --resume): the new target, and the weight from the next step."""
        self.beta = float(beta)
        self.advance(step)
        self.weighted = self.weighted or self.beta != 1.0

    def describe(self, step: int) -> str:
        """E.g. 'beta 4 (warm-up: 1.2 at step 300 of 1000)' for the run pane."""
        if self.warmup > 0 and step < self.warmup:
            return f"{self.beta:g} (warm-up: {self.at(step):.3g} at step {step:,} of {self.warmup:,})"
        return f"{self.beta:g}"
