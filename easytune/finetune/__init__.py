"""Reward fine-tuning methods, each one short loop over the sampler (easytune.diffusion.Sampler):

    easytune.py   EasyTune: gradients through one denoiser call per optimized step (step / chain)
    harness.py    what every method shares: config, prompts, reward and guards, LoRA, checkpoints,
                  the `finetune` command and the `finetune(cfg, on_step=, should_stop=)` library entry
    lora.py       LoRA adapters through peft (add, save/load, merge)
"""
