"""EasyTune: step-aware reward fine-tuning of text-to-motion diffusion models, and its tooling."""

__version__ = "0.1.0"
