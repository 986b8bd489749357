"""Quick stick-figure MP4 preview of joint positions (matplotlib + imageio-ffmpeg), no GPU, no body model.

For the rendered body meshes see easytune/render.py; this is the cheap check after `sample`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from easytune.errors import UserError
from easytune.motion.skeleton import FPS, KINEMATIC_CHAIN, NUM_JOINTS

_COLORS = ["#d62728", "#1f77b4", "#333333", "#ff7f0e", "#2ca02c"]  # right leg, left leg, spine, arms


def stick_figure_frames(joints: np.ndarray, *, size: int = 320, title: str | None = None) -> np.ndarray:
    """Draw (T, 22, 3) joints (metres, y-up) as (T, size, size, 3) uint8 RGB frames.

    The camera follows the root in x/z, so long walks stay in view; a floor grid shows the travel.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    joints = np.asarray(joints, dtype=np.float32)
    if joints.ndim != 3 or joints.shape[1:] != (NUM_JOINTS, 3) or len(joints) == 0:
        raise UserError(f"joints must have shape (frames, {NUM_JOINTS}, 3), got {joints.shape}")
    if not np.isfinite(joints).all():
        raise UserError("joints contain NaN or infinite values; a preview needs finite joint positions")
    if not 64 <= size <= 2048:
        raise UserError(f"preview size must be between 64 and 2048 pixels, got {size}")
    dpi = 80
    fig = plt.figure(figsize=(size / dpi, size / dpi), dpi=dpi)
    ax = fig.add_subplot(projection="3d")
    floor = float(joints[..., 1].min())
    frames = []
    for t in range(len(joints)):
        ax.cla()
        cx, cz = joints[t, 0, 0], joints[t, 0, 2]
        ax.set_xlim(cx - 1, cx + 1)
        ax.set_ylim(cz - 1, cz + 1)
        ax.set_zlim(floor, floor + 2)
        ax.view_init(elev=15, azim=-60)
        ax.set_axis_off()
        gx = np.arange(np.floor(cx - 1), cx + 1.01, 0.5)
        gz = np.arange(np.floor(cz - 1), cz + 1.01, 0.5)
        for x in gx:
            ax.plot([x, x], [cz - 1, cz + 1], [floor, floor], color="#cccccc", lw=0.5)
        for z in gz:
            ax.plot([cx - 1, cx + 1], [z, z], [floor, floor], color="#cccccc", lw=0.5)
        ax.plot(joints[: t + 1, 0, 0], joints[: t + 1, 0, 2], np.full(t + 1, floor), color="#9467bd", lw=1)
        for chain, color in zip(KINEMATIC_CHAIN, _COLORS):
            p = joints[t, chain]
            ax.plot(p[:, 0], p[:, 2], p[:, 1], color=color, lw=2.5)  # matplotlib's z-up: plot y as height
        if title:
            ax.set_title(title[:60], fontsize=7)
        fig.canvas.draw()
        frames.append(np.asarray(fig.canvas.buffer_rgba())[..., :3].copy())
    plt.close(fig)
    return np.stack(frames)


def stick_figure_video(joints: np.ndarray, path: str | Path, *, fps: int = FPS, size: int = 320,
                       title: str | None = None) -> Path:
    """Write an H.264 MP4 of the stick figure to `path` (atomic) and return the path."""
    import os

    import imageio.v2 as imageio

    from easytune.inputs import check_fps

    fps = check_fps(fps, "preview fps", high=120)
    frames = stick_figure_frames(joints, size=size, title=title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Atomic write; the temp name keeps the .mp4 suffix because ffmpeg picks the container from it.
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.partial{path.suffix or '.mp4'}")
    try:
        writer = imageio.get_writer(str(tmp), format="FFMPEG", fps=fps, codec="libx264", macro_block_size=16,
                                    ffmpeg_log_level="error", output_params=["-pix_fmt", "yuv420p"])
        try:
            for frame in frames:
                writer.append_data(frame)
        finally:
            writer.close()
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
