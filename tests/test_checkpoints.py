import json

import pytest
import torch

from easytune import checkpoints as ck
from easytune.errors import UserError


def _model():
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))


def test_round_trip_and_registry(tmp_path):
    m = _model()
    ck.save_checkpoint(tmp_path / "tiny", m.state_dict(), kind="base", config={"width": 3},
                       dataset={"stamp": "abc"}, meta={"seed": 0})
    assert sorted(p.name for p in (tmp_path / "tiny").iterdir()) == ["config.json", "model.safetensors"]
    got = ck.load_checkpoint("tiny", roots=[tmp_path])
    assert (got.kind, got.config, got.dataset["stamp"], got.name) == ("base", {"width": 3}, "abc", "tiny")
    m2 = _model()
    ck.load_weights(m2, got.state, source="tiny")
    x = torch.randn(5, 4)
    assert torch.equal(m(x), m2(x))
    assert [e["name"] for e in ck.list_checkpoints([tmp_path])] == ["tiny"]


def test_mismatch_and_corruption_give_clear_errors(tmp_path):
    ck.save_checkpoint(tmp_path / "a", _model().state_dict(), kind="base", config={})
    wide = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.ReLU(), torch.nn.Linear(5, 2))
    with pytest.raises(UserError, match=r"shape mismatch for 0.bias: checkpoint \(3,\) vs model \(5,\)"):
        ck.load_weights(wide, ck.load_checkpoint(tmp_path / "a").state, source="a")
    with pytest.raises(UserError, match="holds a 'base' model, expected 'reward'"):
        ck.load_checkpoint(tmp_path / "a", kind="reward")
    with pytest.raises(UserError, match="not found"):
        ck.load_checkpoint("nope", roots=[tmp_path])
    (tmp_path / "a" / "model.safetensors").write_bytes(b"\x00" * 10)
    with pytest.raises(UserError, match="corrupt or truncated"):
        ck.load_checkpoint(tmp_path / "a")
    (tmp_path / "a" / "config.json").write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        ck.load_checkpoint(tmp_path / "a")


def test_dataset_stamp_mismatch_is_refused(tmp_path):
    ck.save_checkpoint(tmp_path / "a", _model().state_dict(), kind="base", config={}, dataset={"stamp": "s1"})
    c = ck.load_checkpoint(tmp_path / "a")
    ck.check_dataset(c, "s1")
    with pytest.raises(UserError, match="trained on dataset s1"):
        ck.check_dataset(c, "s2")


def test_same_dataset_by_byte_or_content_stamp():
    assert ck.same_dataset({"stamp": "s1"}, {"stamp": "s1", "content_stamp": "c1"})
    assert ck.same_dataset({"stamp": "s1", "content_stamp": "c1"}, {"stamp": "s2", "content_stamp": "c1"})
    assert not ck.same_dataset({"stamp": "s1", "content_stamp": "c1"}, {"stamp": "s2", "content_stamp": "c2"})
    assert not ck.same_dataset({"stamp": "s1"}, {"stamp": "s2"})  # no content stamp on one side: bytes decide
    assert not ck.same_dataset({"stamp": "s1", "content_stamp": None}, {"stamp": "s2", "content_stamp": None})
    assert ck.same_dataset({}, {"stamp": "s2"}) and ck.same_dataset(None, {"stamp": "s2"})  # unknown matches


def test_failed_write_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    m = _model()
    ck.save_checkpoint(tmp_path / "a", m.state_dict(), kind="base", config={"v": 1})

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(ck, "save_file", boom)
    with pytest.raises(RuntimeError):
        ck.save_checkpoint(tmp_path / "a", _model().state_dict(), kind="base", config={"v": 2})
    got = ck.load_checkpoint(tmp_path / "a")
    assert got.config == {"v": 1} and torch.equal(got.state["0.weight"], m.state_dict()["0.weight"])
    assert [p.name for p in (tmp_path / "a").iterdir() if p.name.startswith(".")] == []


def test_train_state_resumes_optimizer(tmp_path):
    torch.manual_seed(0)
    m = _model()
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
    for _ in range(3):
        opt.zero_grad()
        m(torch.randn(8, 4)).pow(2).mean().backward()
        opt.step()
    ck.save_train_state(tmp_path, opt, {"step": 3}, {"ema.w": torch.ones(2)})
    m2 = _model()
    m2.load_state_dict(m.state_dict())
    opt2 = torch.optim.AdamW(m2.parameters(), lr=1e-2)
    extra, tensors = ck.load_train_state(tmp_path, opt2)
    assert extra == {"step": 3} and torch.equal(tensors["ema.w"], torch.ones(2))
    x = torch.randn(8, 4)
    for o, mod in ((opt, m), (opt2, m2)):
        o.zero_grad()
        mod(x).pow(2).mean().backward()
        o.step()
    for a, b in zip(m.parameters(), m2.parameters()):
        assert torch.allclose(a, b)
    assert json.loads((tmp_path / "train_state.json").read_text())["extra"]["step"] == 3
    assert ck.load_train_state(tmp_path / "none", None) is None


def test_atomic_files_get_normal_permissions(tmp_path):
    import os

    from easytune.fileio import write_text

    write_text(tmp_path / "f.txt", "x")
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "f.txt").stat().st_mode & 0o777 == 0o666 & ~umask


def test_promote_copies_weights_and_appends_provenance(tmp_path):
    run = tmp_path / "run"
    ck.save_checkpoint(run, _model().state_dict(), kind="reward", config={}, dataset={"stamp": "s1"},
                       meta={"command": "python -m easytune train reward", "seed": 3, "steps": 10, "wall_s": 90.0})
    (run / "README.md").write_text("# Card\n\n## Metrics\nR@1 1.0\n")
    ck.save_train_state(run, torch.optim.AdamW(_model().parameters()), {"step": 10})
    dst = ck.promote(run, "mine", root=tmp_path / "demo")
    assert sorted(p.name for p in dst.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    card = (dst / "README.md").read_text()
    assert "R@1 1.0" in card and "- dataset stamp: s1" in card and "- wall time: 1.5 min" in card
    assert f"sha256 {ck.file_hash(dst / 'model.safetensors')}" in card
    with pytest.raises(UserError, match="already exists"):
        ck.promote(run, "mine", root=tmp_path / "demo")
    ck.promote(run, "mine", root=tmp_path / "demo", replace=True)  # again: one Provenance section, not two
    assert (dst / "README.md").read_text().count("## Provenance") == 1
    assert ck.load_checkpoint("mine", roots=[tmp_path / "demo"]).kind == "reward"


def test_promote_can_set_the_default_sampler(tmp_path, capsys):
    from easytune.cli import main as cli_main

    run = tmp_path / "run"
    sampling = {"steps": 10, "guidance": 2.5, "eta": 0.0}
    ck.save_checkpoint(run, _model().state_dict(), kind="base", config={"sampling": dict(sampling)},
                       meta={"command": "python -m easytune train base", "seed": 0})
    dst = ck.promote(run, "b", root=tmp_path / "demo", sampling=ck.parse_sampling(["steps=20"]))
    assert ck.load_checkpoint(dst).config["sampling"] == {"steps": 20, "guidance": 2.5, "eta": 0.0}
    assert "- default sampler: steps 20, guidance 2.5, eta 0.0" in (dst / "README.md").read_text()
    assert ck.load_checkpoint(run).config["sampling"] == sampling  # the run itself is untouched
    for bad, msg in ((["steps=0"], "steps"), (["steps=ten"], "must look like"), (["foo=1"], "unknown"),
                     (["guidance=99"], "guidance"), (["eta=2"], "eta")):
        with pytest.raises(UserError, match=msg):
            ck.parse_sampling(bad)
    rw = tmp_path / "rw"
    ck.save_checkpoint(rw, _model().state_dict(), kind="reward", config={})
    with pytest.raises(UserError, match="no default sampler"):
        ck.promote(rw, "r", root=tmp_path / "demo", sampling={"steps": 20})
    assert cli_main(["checkpoints", "--sampling", "steps=20"]) == 2
    assert "only apply with --promote" in capsys.readouterr().err


# --- the registry: names, no silent replacement, all or nothing ---------------------------------

def _tree(root):
    """{relative path: bytes} of every file under root, hidden ones included."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def registry(tmp_path, monkeypatch):
    """A temporary demo root holding a 'base' checkpoint with an extra card file; runs of each kind."""
    demo = tmp_path / "demo"
    monkeypatch.setattr(ck, "DEMO_ROOT", demo)
    monkeypatch.delenv("EASYTUNE_CHECKPOINTS", raising=False)
    sampling = {"steps": 10, "guidance": 2.5, "eta": 0.0}
    ck.save_checkpoint(demo / "base", _model().state_dict(), kind="base", config={"sampling": sampling})
    (demo / "base" / "README.md").write_text("# shipped base\n")
    runs = {}
    for kind in ("base", "reward"):
        runs[kind] = tmp_path / f"run_{kind}"
        ck.save_checkpoint(runs[kind], _model().state_dict(), kind=kind,
                           config={"sampling": dict(sampling)} if kind == "base" else {})
    return demo, runs


@pytest.mark.parametrize("name", ["../../x", "/abs/path", "a/b", ".hidden", "..", ".", "", "x" * 65, "a b",
                                  "a\\b", "-flag", "caf\u00e9", "name\n"])
def test_register_refuses_names_that_are_not_plain(registry, name):
    demo, runs = registry
    before = _tree(demo.parent)
    with pytest.raises(UserError, match="not allowed|is empty"):
        ck.register(runs["base"], name)
    assert _tree(demo.parent) == before


def test_register_never_replaces_silently_nor_by_another_kind(registry):
    demo, runs = registry
    before = _tree(demo)
    with pytest.raises(UserError, match="already exists.*--replace"):
        ck.promote(runs["base"], "base")
    with pytest.raises(UserError, match="holds a 'base' model; it cannot be replaced by a 'reward'"):
        ck.promote(runs["reward"], "base", replace=True)
    assert _tree(demo) == before
    dst = ck.promote(runs["base"], "base", replace=True)  # asked for, same kind: replaced whole
    assert sorted(p.name for p in dst.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    assert "shipped base" not in (dst / "README.md").read_text()
    assert [e["name"] for e in ck.list_checkpoints()] == ["base"]
    assert sorted(p.name for p in demo.iterdir()) == ["base"]  # no temporary or old folder left


def test_failed_promote_leaves_nothing(registry, monkeypatch):
    demo, runs = registry
    before = _tree(demo)
    with pytest.raises(UserError, match="no default sampler"):
        ck.promote(runs["reward"], "r", sampling={"steps": 20})
    assert _tree(demo) == before

    def broken(tmp):  # e.g. the copy does not load: a registration must leave nothing behind
        (tmp / ck.WEIGHTS).write_bytes(b"not safetensors")

    with pytest.raises(UserError, match="corrupt or truncated"):
        ck.register(runs["reward"], "r", edit=broken)
    with pytest.raises(UserError, match="corrupt or truncated"):
        ck.register(runs["base"], "base", replace=True, edit=broken)
    assert _tree(demo) == before
    assert ck.load_checkpoint("base").kind == "base"


def test_register_refuses_a_name_taken_in_another_root_and_skips_hidden_folders(registry, tmp_path, monkeypatch):
    demo, runs = registry
    user = tmp_path / "user"
    monkeypatch.setenv("EASYTUNE_CHECKPOINTS", str(user))
    with pytest.raises(UserError, match="already taken by"):
        ck.register(runs["base"], "base", root=user)
    assert not user.exists()
    dst = ck.register(runs["reward"], "my-reward.v2", root=user)
    assert ck.load_checkpoint("my-reward.v2").kind == "reward" and dst.parent == user
    ck.save_checkpoint(user / ".mine.registering-123", _model().state_dict(), kind="lora", config={})
    assert sorted(e["name"] for e in ck.list_checkpoints()) == ["base", "my-reward.v2"]
    (user / "junk").mkdir()
    (user / "junk" / "config.json").write_text("[1, 2]")  # not an object: not listed, no traceback
    assert sorted(e["name"] for e in ck.list_checkpoints()) == ["base", "my-reward.v2"]
    with pytest.raises(UserError, match="not a readable checkpoint"):
        ck.register(runs["base"], "junk", root=user, replace=True)
