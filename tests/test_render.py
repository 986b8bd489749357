"""Renderer: silhouettes against an independent rasteriser, videos read back, threads, no-GL fallback."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from easytune import render as R
from easytune.errors import UserError

REPO = Path(__file__).resolve().parent.parent

# A T-pose on the SMPL/HumanML3D 22-joint tree (y-up, metres, facing +z; joint 1 is the left hip at +x).
T_POSE = np.array([
    [0.00, 0.95, 0.00], [0.09, 0.88, 0.00], [-0.09, 0.88, 0.00], [0.00, 1.05, 0.00],
    [0.10, 0.50, 0.01], [-0.10, 0.50, 0.01], [0.00, 1.18, 0.00], [0.10, 0.08, -0.02],
    [-0.10, 0.08, -0.02], [0.00, 1.24, 0.02], [0.10, 0.02, 0.10], [-0.10, 0.02, 0.10],
    [0.00, 1.45, 0.00], [0.08, 1.38, 0.00], [-0.08, 1.38, 0.00], [0.00, 1.58, 0.02],
    [0.18, 1.40, 0.00], [-0.18, 1.40, 0.00], [0.45, 1.40, 0.00], [-0.45, 1.40, 0.00],
    [0.70, 1.40, 0.00], [-0.70, 1.40, 0.00]], dtype=np.float32)


def _walk(frames: int = 24, speed: float = 1.0) -> np.ndarray:
    """The T-pose walking along +z with swinging legs: (frames, 22, 3)."""
    t = np.arange(frames)[:, None, None] / 20.0
    j = np.repeat(T_POSE[None], frames, axis=0).copy()
    j[..., 2] += speed * t[..., 0]
    swing = 0.25 * np.sin(2 * np.pi * t[:, 0, 0])
    for knee, ankle, foot, sign in ((4, 7, 10, 1), (5, 8, 11, -1)):
        j[:, [knee, ankle, foot], 2] += sign * swing[:, None] * np.array([0.5, 1.0, 1.0])
    return j


def _motion(joints: np.ndarray, label: str = "") -> R.BodyMotion:
    verts, faces = R.capsule_mesh_sequence(joints)
    return R.BodyMotion(joints, verts, faces, label=label)


@pytest.fixture(scope="module")
def gl():
    reason = R.gl_unavailable_reason()
    if reason:
        if os.environ.get("EASYTUNE_REQUIRE_DATA") == "1":
            pytest.fail(f"CI needs GL: {reason}")
        pytest.skip(reason)


def _rasterize(verts: np.ndarray, faces: np.ndarray, pose: np.ndarray, yfov: float, w: int, h: int) -> np.ndarray:
    """Independent silhouette: pinhole-project every triangle, fill it with PIL at 4x resolution and
    keep pixels more than half covered (GL samples pixel centres; PIL also fills edge pixels)."""
    from PIL import Image, ImageDraw

    ss = 4

    rot, eye = pose[:3, :3], pose[:3, 3]
    cam = (verts - eye) @ rot  # world -> camera (rows of rot^T)
    f = (h / 2) / np.tan(yfov / 2)
    px = ss * np.stack([w / 2 + f * cam[:, 0] / -cam[:, 2], h / 2 - f * cam[:, 1] / -cam[:, 2]], axis=1)
    img = Image.new("L", (w * ss, h * ss), 0)
    draw = ImageDraw.Draw(img)
    for tri in faces:
        draw.polygon([tuple(px[i] - 0.5) for i in tri], fill=1)
    return np.asarray(img).reshape(h, ss, w, ss).mean(axis=(1, 3)) > 0.5


def test_t_pose_silhouette_matches_independent_rasteriser(gl):
    motion = _motion(T_POSE[None])
    cfg = R.RenderConfig(size=160, floor=False, shadow=False, show_labels=False, backend="mesh")
    layout = R.plan_layout([motion], cfg)
    frame = next(R.render_frames([motion], cfg))
    assert frame.shape == (160, 160, 3) and frame.dtype == np.uint8
    bg = np.round(np.array(R.BACKGROUND) * 255)
    rendered = np.abs(frame.astype(float) - bg).max(axis=-1) > 12
    verts = motion.verts[0] + layout.offsets[0, 0].astype(np.float32)
    expected = _rasterize(verts, motion.faces, layout.camera_pose, layout.yfov, 160, 160)
    iou = (rendered & expected).sum() / (rendered | expected).sum()
    assert expected.sum() > 600  # the body fills a real part of the frame
    assert iou > 0.9, iou


def test_lanes_follow_each_body(gl):
    """Two bodies walking at different speeds each stay centred in their own lane."""
    motions = [R.BodyMotion(_walk(40, 1.0)), R.BodyMotion(_walk(40, 2.5))]
    cfg = R.RenderConfig(size=200)
    layout = R.plan_layout(motions, cfg)
    for k, m in enumerate(motions):
        root_px = layout.project(m.joints[:, 0] + layout.offsets[k])
        assert np.all(np.abs(root_px[:, 0] - (k + 0.5) * 200) < 20), root_px[:, 0]
    # The grid moves under the walker: consecutive floors differ, a standing body's would not.
    painter = R.FloorPainter(motions, layout, cfg)
    assert (painter.paint(0) != painter.paint(5)).any()
    still = R.FloorPainter([R.BodyMotion(np.repeat(T_POSE[None], 6, 0))],
                           R.plan_layout([R.BodyMotion(np.repeat(T_POSE[None], 6, 0))], cfg), cfg)
    np.testing.assert_array_equal(still.paint(0), still.paint(5))


def test_side_by_side_video_frame_count_and_size(gl, tmp_path):
    import imageio.v3 as iio

    motions = [_motion(_walk(12), "base"), _motion(_walk(9, 1.5), "easytune")]  # shorter one holds its last frame
    cfg = R.RenderConfig(size=96, fps=20)
    mp4 = R.render_video(motions, tmp_path / "both.mp4", cfg)
    frames = np.stack(list(_ffmpeg_frames(mp4)))
    assert frames.shape == (12, 96, 192, 3)
    gif = R.render_video(motions[:1], tmp_path / "one.gif", cfg)
    g = iio.imread(gif)
    assert g.shape[:3] == (12, 96, 96)
    from PIL import Image

    with Image.open(gif) as im:
        assert im.info["duration"] == 50 and im.info["loop"] == 0  # 20 fps, loops forever
    assert not list(tmp_path.glob(".*tmp*"))  # atomic writes leave no temp files


def _ffmpeg_frames(path):
    import imageio.v2 as iio2

    reader = iio2.get_reader(str(path), format="FFMPEG")
    try:
        yield from reader
    finally:
        reader.close()


def test_mp4_is_h264_yuv420p(gl, tmp_path):
    import imageio_ffmpeg

    out = R.render_video([_motion(_walk(4))], tmp_path / "a.mp4", R.RenderConfig(size=64))
    probe = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(out)],
                           capture_output=True, text=True)
    assert "h264" in probe.stderr and "yuv420p" in probe.stderr


def test_renderer_works_in_a_worker_thread(gl):
    motion = _motion(_walk(3))
    cfg = R.RenderConfig(size=64, backend="mesh")

    def job():
        return list(R.render_frames([motion], cfg)), R.thread_renderer(), threading.get_ident()

    with ThreadPoolExecutor(max_workers=1) as pool:
        worker_frames, worker_renderer, worker_thread = pool.submit(job).result()
        again, same_renderer, _ = pool.submit(job).result()  # the thread keeps its context
    main_frames = list(R.render_frames([motion], cfg))
    assert worker_thread != threading.get_ident()
    assert same_renderer is worker_renderer and worker_renderer is not R.thread_renderer()
    for a, b, c in zip(worker_frames, again, main_frames):
        np.testing.assert_array_equal(a, b)
        assert np.abs(a.astype(int) - c.astype(int)).mean() < 0.5
    with pytest.raises(RuntimeError, match="thread"):
        next(worker_renderer.render([motion], cfg))
    # Two callbacks at once (Gradio's worker pool): each thread has its own context, same pictures.
    with ThreadPoolExecutor(max_workers=2) as pool:
        both = [f.result()[0] for f in [pool.submit(job), pool.submit(job)]]
    for a, b in zip(*both):
        np.testing.assert_array_equal(a, b)


def test_stick_fallback_when_gl_is_missing(monkeypatch):
    """Without GL, backend=mesh names the missing packages and auto draws stick figures."""
    def no_gl(self):
        raise R.RenderUnavailable("OpenGL offscreen rendering (EGL) is unavailable here (simulated); install "
                                  f"the Debian packages {R.GL_PACKAGES}, or use the stick-figure renderer")

    motion = _motion(_walk(5))
    monkeypatch.setattr(R.MeshRenderer, "__init__", no_gl)
    monkeypatch.setattr(R._TLS, "renderer", None, raising=False)
    with pytest.raises(R.RenderUnavailable, match="libegl1"):
        list(R.render_frames([motion], R.RenderConfig(size=64, backend="mesh")))
    auto = list(R.render_frames([motion], R.RenderConfig(size=64, backend="auto")))
    stick = list(R.render_frames([motion], R.RenderConfig(size=64, backend="stick")))
    assert len(auto) == 5
    for a, b in zip(auto, stick):
        np.testing.assert_array_equal(a, b)
    # The stick figure is drawn where the camera puts the root joint.
    layout = R.plan_layout([motion], R.RenderConfig(size=64))
    u, v, _ = layout.project(motion.joints[0, 0] + layout.offsets[0, 0])
    assert (np.abs(stick[0][int(v), int(u)].astype(int) - np.round(np.array(R.LANE_COLORS[0]) * 204)) < 3).all()


def test_real_missing_egl_gives_one_clear_sentence():
    """A real EGL failure (no vendor library) in a fresh process: a UserError naming the packages."""
    code = ("from easytune import render as R\n"
            "print(R.gl_unavailable_reason())\n")
    env = dict(os.environ, __EGL_VENDOR_LIBRARY_FILENAMES="/nonexistent/egl.json", PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "EGL" in out.stdout and "libegl1 libegl-mesa0" in out.stdout and "--backend stick" in out.stdout


def test_bad_settings_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="even"):
        R.RenderConfig(size=101).validate()
    with pytest.raises(UserError, match="msaa"):
        R.RenderConfig(msaa=3).validate()
    with pytest.raises(UserError, match="shape"):
        R.BodyMotion(np.zeros((5, 22)))
    with pytest.raises(UserError, match=".mp4 or .gif"):
        R.write_video(iter([np.zeros((8, 8, 3), np.uint8)]), tmp_path / "x.avi", 20)


def test_vertex_normals_of_a_cube_point_outwards():
    import trimesh

    box = trimesh.creation.box([1.0, 1.0, 1.0])
    n = R.vertex_normals(np.asarray(box.vertices)[None], box.faces)[0]
    np.testing.assert_allclose(np.linalg.norm(n, axis=1), 1.0, atol=1e-6)
    assert (np.sum(n * box.vertices, axis=1) > 0.5).all()


def test_body_motions_ground_the_mesh_and_keep_joints_with_it():
    """IK + the shipped light body: mesh on the floor, joints lifted by the same amount as the mesh."""
    pytest.importorskip("smplx")
    (m,) = R.body_motions([_walk(6)], ["walk"], body="anny", lite=True)
    assert m.verts.shape[1] < 5000 and m.label == "walk"
    assert abs(float(m.verts[..., 1].min())) < 1e-5
    lo, hi = m.verts.min(axis=1), m.verts.max(axis=1)
    assert ((m.joints[:, 0] > lo) & (m.joints[:, 0] < hi)).all()  # pelvis joint inside the body's box
    with pytest.raises(UserError, match="one label per motion"):
        R.body_motions([_walk(3)], ["a", "b"], body="capsule")
    with pytest.raises(UserError, match="allowed"):
        R.body_motions([_walk(3)], body="robot")


def test_render_command_writes_video_and_settings(gl, tmp_path):
    import imageio.v2 as iio2

    from easytune.cli import main

    np.save(tmp_path / "a.npy", _walk(10))
    np.save(tmp_path / "b.npy", _walk(10, 2.0))
    out = tmp_path / "cmp.mp4"
    code = main(["render", "--joints", str(tmp_path / "a.npy"), "--joints2", str(tmp_path / "b.npy"),
                 "--labels", "base,easytune", "--out", str(out), "--body", "capsule", "--size", "96"])
    assert code == 0
    reader = iio2.get_reader(str(out), format="FFMPEG")
    assert reader.count_frames() == 10 and reader.get_data(0).shape == (96, 192, 3)
    reader.close()
    settings = __import__("json").loads((tmp_path / "cmp.render.json").read_text())
    assert settings["render"]["size"] == 96 and settings["labels"] == ["base", "easytune"]
    assert main(["render", "--joints", str(tmp_path / "a.npy"), "--labels", "x,y", "--out", str(out)]) == 2
    assert main(["render", "--joints", str(tmp_path / "missing.npy"), "--out", str(out)]) == 2


def test_closing_a_thread_renderer_frees_it_and_a_new_one_works(gl):
    motion = _motion(_walk(2))
    cfg = R.RenderConfig(size=64, backend="mesh")

    def job():
        first = list(R.render_frames([motion], cfg))
        old = R.thread_renderer()
        R.close_thread_renderer()
        second = list(R.render_frames([motion], cfg))
        return first, second, old, R.thread_renderer()

    with ThreadPoolExecutor(max_workers=1) as pool:
        first, second, old, new = pool.submit(job).result()
    assert old is not new and old._closed and not new._closed
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


def test_a_dropped_renderer_of_another_thread_leaves_ours_intact(gl):
    """pyrender deletes GL objects by id when collected, in whatever context the collecting thread
    has current; ids repeat across contexts, so that used to delete this thread's shaders."""
    import gc

    motion = _motion(_walk(2))
    cfg = R.RenderConfig(size=64, backend="mesh")
    before = list(R.render_frames([motion], cfg))
    box = {}

    def job():
        box["renderer"] = R.MeshRenderer()
        box["frames"] = list(box["renderer"].render([motion], cfg))

    thread = threading.Thread(target=job)
    thread.start()
    thread.join()
    assert len(box["frames"]) == 2
    box.clear()
    gc.collect()  # here, in this thread
    after = list(R.render_frames([motion], cfg))
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)
