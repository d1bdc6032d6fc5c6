"""Training: objectives, the step contract and its fast variants, the trainer and its two doors (controller in,
events out)."""
