import json

import numpy as np
import pytest

from easytune import evaluator as V
from easytune import recognize as RC
from easytune.cli import main as cli_main
from easytune.errors import UserError
from test_reward import HashTextEncoder, write_toy_dataset


def test_split_label_takes_out_the_side_word():
    assert RC.split_label("raise-up-left-hand") == ("raise-up-hand", "left")
    assert RC.split_label("raise-up-both-hands") == ("raise-up-hand", "both")
    assert RC.split_label("wave-right-hand") == ("wave-hand", "right")
    assert RC.split_label("walk-turn-left") == ("walk-turn", "left")
    assert RC.split_label("walk-left") == ("walk", "left")
    assert RC.split_label("run") == ("run", "none")
    assert RC.split_label("dance-short") == ("dance-short", "none")


def test_score_by_hand():
    truth = [("wave-left-hand", "sad"), ("wave-right-hand", "sad"), ("run", "happy"), ("raise-up-both-hands", "sad")]
    pred = [("wave-left-hand", "sad"), ("wave-left-hand", "happy"), ("walk", "happy"), ("wave-both-hands", "sad")]
    s = RC.score(truth, pred)
    assert s["n"] == 4
    assert s["content"] == pytest.approx(1 / 4)
    assert s["action"] == pytest.approx(2 / 4)  # wave-hand twice right; run->walk, raise->wave wrong
    assert s["side"] == pytest.approx(3 / 4)  # only right->left is wrong
    assert s["side_of_sided"] == pytest.approx(2 / 3) and s["n_sided"] == 3
    assert s["style"] == pytest.approx(3 / 4)
    assert s["sides"] == ["left", "right", "both", "none"]
    assert s["side_confusion"] == [[1, 0, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]
    assert s["actions"] == ["raise-up-hand", "run", "walk", "wave-hand"]
    assert s["action_confusion"][0] == [0, 0, 0, 1] and s["action_confusion"][1] == [0, 0, 1, 0]
    table = RC.matrix_markdown(s["sides"], s["side_confusion"])
    assert "| **right** | 1 | . | . | . | 1 | 0.0% |" in table


def test_classify_is_nearest_prototype():
    protos = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    motions = np.array([[9.0, 1.0], [1.0, 1.0], [1.0, 8.0]])
    assert RC.classify(motions, protos).tolist() == [1, 0, 2]


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("recognize")
    data = write_toy_dataset(root / "data")
    cfg = V.EvaluatorTrainConfig(data=str(data), out=str(root / "ev"), preset="tiny", embed_dim=16, steps=300,
                                 batch_size=16, lr=3e-3, warmup=2, margin=3.0, fn_threshold=0.95, log_every=300)
    V.main(cfg, text_encoder=HashTextEncoder())
    return root, data


def _real_test_motions(data):
    from easytune.motion.dataset import MotionDataset

    ds = MotionDataset(data, "test", random_crop=False)
    return [ds[i]["motion"].numpy() for i in range(len(ds))], ds.labels


def test_recognize_oracle_matches_real_row_and_wrong_generator_scores_worse(toy, tmp_path):
    root, data = toy
    real, labels = _real_test_motions(data)
    cfg = RC.RecognizeConfig(evaluator=str(root / "ev"), data=str(data), out=str(tmp_path / "rec"), device="cpu")

    oracle = lambda texts, lengths, seed, steps: [m[:n] for m, n in zip(real, lengths)]  # noqa: E731
    res = RC.main(cfg, text_encoder=HashTextEncoder(), generate=oracle)
    rows = res["rows"]
    assert res["groups"] == {"seen": 32, "unseen": 24}
    assert rows["real"]["all"]["n"] == 56 and rows["real"]["seen"]["n"] == 32 and rows["real"]["unseen"]["n"] == 24
    assert rows["real"]["seen"]["content"] > 0.5  # 8 contents: chance is 1/8; 300 steps learn them (0.72-0.81 over seeds 0-2; 150 steps: 0.34-0.66)
    for g in ("seen", "unseen", "all"):
        assert rows["generated"][g]["content"] == rows["real"][g]["content"]
        assert rows["generated"][g]["action_confusion"] == rows["real"][g]["action_confusion"]

    # a generator that always shows the motion of another content
    other = [next(j for j in range(len(real)) if labels[j][0] != labels[i][0]) for i in range(len(real))]
    wrong = lambda texts, lengths, seed, steps: [real[o] for o in other]  # noqa: E731
    bad = RC.main(cfg, text_encoder=HashTextEncoder(), generate=wrong)["rows"]["generated"]["all"]
    assert bad["content"] < rows["real"]["all"]["content"] - 0.3

    saved = json.loads((tmp_path / "rec" / "results.json").read_text())
    assert len(saved["motions"]) == 56 and saved["motions"][0]["caption"]
    assert {"name", "group", "label", "real", "generated"} <= set(saved["motions"][0])
    assert saved["rows"]["generated"]["all"]["content"] == pytest.approx(bad["content"])
    report = (tmp_path / "rec" / "report.md").read_text()
    assert "| real test motions | seen | 32 |" in report and "Action confusion, generated, unseen" in report
    assert "| prompt content | n | real test motions: recognised as the content |" in report


def test_recognize_needs_labels(toy, tmp_path):
    root, data = toy
    (data / "labels.json").rename(tmp_path / "labels.json")
    try:
        cfg = RC.RecognizeConfig(evaluator=str(root / "ev"), data=str(data), out=str(tmp_path / "rec"), device="cpu")
        with pytest.raises(UserError, match="labels"):
            RC.main(cfg, text_encoder=HashTextEncoder())
    finally:
        (tmp_path / "labels.json").rename(data / "labels.json")


def test_recognize_command_rejects_unknown_evaluator(tmp_path, capsys):
    code = cli_main(["recognize", "--evaluator", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert code == 2 and "error:" in capsys.readouterr().err
