"""Render speed: IK + mesh + frames + MP4 for a 6-second, 20 fps motion at 480x480 per body.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_render.py                 # the table below
    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_render.py --frames-out assets/readme

Times one body and two bodies side by side, warm (GL context, body model and shaders already
loaded, as in the playground after its first video), on the real HumanML3D reference motion in
../shared/data (it exits with a message otherwise). `--baseline` adds the straightforward pyrender
pipeline for comparison: full 13.5k-vertex mesh, PBR shading, a shadow-mapped light, a floor in
the scene, 4x MSAA, one render call per body.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from easytune import render as R  # noqa: E402

REFERENCE = REPO.parent / "shared" / "data" / "humanml3d-reference" / "new_joints" / "012314.npy"


def load_motion(frames: int) -> tuple[np.ndarray, np.ndarray, str]:
    """Two different motions of `frames` frames (the second is the first, later in the clip)."""
    if REFERENCE.is_file():
        j = np.load(REFERENCE).astype(np.float32)
        a = np.concatenate([j, j[::-1]])[:frames]
        b = np.concatenate([j[40:], j[::-1], j])[:frames]
        return a, b, f"HumanML3D reference {REFERENCE.name}"
    raise SystemExit(f"{REFERENCE} not found: this benchmark times the real HumanML3D reference motion "
                     f"from ../shared/data (set it up beside the repo)")


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def run_case(joints: list[np.ndarray], labels: list[str], cfg: R.RenderConfig, lite: bool, out: Path) -> dict:
    motions, t_mesh = timed(R.body_motions, joints, labels, lite=lite)
    cpu = time.process_time()
    frames, t_render = timed(lambda: list(R.render_frames(motions, cfg)))
    cpu = time.process_time() - cpu  # this process incl. llvmpipe's threads: less sensitive to other load
    _, t_encode = timed(R.write_video, iter(frames), out, cfg.fps)
    _, t_total = timed(lambda: R.render_video(R.body_motions(joints, labels, lite=lite), out, cfg))
    n = len(frames)
    return {"bodies": len(joints), "frames": n, "verts": motions[0].verts.shape[1], "ik_mesh_s": t_mesh,
            "render_s": t_render, "render_cpu_s": cpu, "render_fps": n / t_render, "encode_s": t_encode,
            "total_s": t_total,
            "mesh_plus_render_s": t_mesh + t_render, "frames_list": frames}


def baseline(joints: np.ndarray, size: int, frames: int) -> float:
    """Seconds per frame, per body, of the plain pyrender pipeline described in the module doc."""
    import trimesh

    from easytune import body as B

    pr = R._import_pyrender()
    body = B.load_body(lite=False)
    _, verts = B.fit_body(joints[:frames], body)
    gl = pr.OffscreenRenderer(size, size)
    start = time.perf_counter()
    for t in range(frames):
        scene = pr.Scene(ambient_light=(0.3, 0.3, 0.3), bg_color=(1.0, 1.0, 1.0, 1.0))
        mesh = trimesh.Trimesh(verts[t], body.faces, process=False)
        material = pr.MetallicRoughnessMaterial(baseColorFactor=(0.6, 0.7, 0.8, 1.0))
        scene.add(pr.Mesh.from_trimesh(mesh, material=material))
        scene.add(pr.Mesh.from_trimesh(trimesh.creation.box((8.0, 0.01, 8.0))), pose=np.eye(4))
        c = verts[t].mean(axis=0)
        scene.add(pr.PerspectiveCamera(yfov=0.7), pose=R._look_at(c + np.array([0.0, 1.0, 4.0]), c))
        scene.add(pr.DirectionalLight(intensity=3.0), pose=R._look_at(c + np.array([-2.0, 6.0, 4.0]), c))
        gl.render(scene, pr.RenderFlags.SHADOWS_DIRECTIONAL)
    gl.delete()
    return (time.perf_counter() - start) / frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--size", type=int, default=480)
    parser.add_argument("--full-mesh", action="store_true", help="the 13.5k-vertex body instead of the ~4k one")
    parser.add_argument("--baseline", action="store_true", help="also time the plain pyrender pipeline (20 frames)")
    parser.add_argument("--frames-out", type=Path, default=None, help="write a few PNG frames here (README)")
    args = parser.parse_args()

    cfg = R.RenderConfig(size=args.size)
    frames = int(round(args.seconds * cfg.fps))
    a, b, source = load_motion(frames)
    print(f"motion: {source}, {frames} frames at {cfg.fps:g} fps, {args.size}x{args.size} per body, "
          f"{'full' if args.full_mesh else 'light'} mesh")
    (_, t_ctx) = timed(R.thread_renderer)
    (_, t_load) = timed(R.body_motions, [a[:2]], lite=not args.full_mesh)
    print(f"cold start: GL context {t_ctx:.2f} s, body model load + first IK {t_load:.2f} s")
    with tempfile.TemporaryDirectory() as tmp:
        run_case([a[:8]], ["warm-up"], cfg, not args.full_mesh, Path(tmp) / "w.mp4")  # shaders, caches
        rows = [run_case([a], ["base"], cfg, not args.full_mesh, Path(tmp) / "one.mp4"),
                run_case([a, b], ["base", "easytune"], cfg, not args.full_mesh, Path(tmp) / "two.mp4")]
    print(f"{'bodies':>6} {'verts':>6} {'IK+mesh s':>9} {'render s':>8} {'(CPU s)':>7} {'fps':>6} "
          f"{'IK+mesh+render s':>16} "
          f"{'MP4 encode s':>12} {'end-to-end MP4 s':>16}")
    for r in rows:
        print(f"{r['bodies']:>6} {r['verts']:>6} {r['ik_mesh_s']:>9.2f} {r['render_s']:>8.2f} "
              f"{r['render_cpu_s']:>7.2f} {r['render_fps']:>6.1f} "
              f"{r['mesh_plus_render_s']:>16.2f} {r['encode_s']:>12.2f} {r['total_s']:>16.2f}")
    if args.baseline:
        per = baseline(a, args.size, 20)
        print(f"baseline (full mesh, PBR, shadow map, MSAA 4x, scene rebuilt per frame): {1000 * per:.0f} ms per "
              f"body-frame -> {2 * frames * per:.1f} s for the two-body video's frames")
    if args.frames_out is not None:
        from PIL import Image

        args.frames_out.mkdir(parents=True, exist_ok=True)
        two = rows[1]["frames_list"]
        for t in (20, 60, 100):
            path = args.frames_out / f"render_side_by_side_{t:03d}.png"
            Image.fromarray(two[min(t, len(two) - 1)]).save(path, optimize=True)
            print(f"wrote {path} ({path.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
