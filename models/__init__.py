"""torch nn.Modules only (no file I/O): denoiser, text encoder wrapper, reward model, evaluator."""
