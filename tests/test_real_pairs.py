"""scripts/real_pairs.py: real-beats-generated preference pairs in the easytune-pairs/1 format, read back by
easytune.spl and trained on by `train spl`."""

import importlib.util
import json
from pathlib import Path

import numpy as np

from easytune import evaluate as E
from easytune import reward as R
from easytune import spl as S
from test_reward import HashTextEncoder

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("real_pairs", REPO / "scripts" / "real_pairs.py")
real_pairs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(real_pairs)


def test_pairs_prefer_the_real_motion_and_train_spl_reads_them(tmp_path):
    from test_reward import write_toy_dataset

    data = write_toy_dataset(tmp_path / "data")
    train = E.load_test_set(str(data), "train", None, None)
    calls = []

    def generate(texts, lengths, seed, steps):
        calls.append((list(texts), list(lengths), seed))
        return [np.full((n, 263), k + 0.5, np.float32) for k, n in enumerate(lengths)]

    out = tmp_path / "pairs"
    n = real_pairs.write_real_pairs(train, generate, out, "toy", max_motions=10, seed=3)
    assert n == 10 and len(calls) == 1 and calls[0][2] == 3
    pairs = S.read_pairs(out / "pairs.jsonl")
    names = [json.loads(line)["motion"] for line in (out / "pairs.jsonl").read_text().splitlines()]
    assert len(set(names)) == 10 and names == sorted(names, key=train.names.index)  # a subset, in split order
    for k, (pair, name) in enumerate(zip(pairs, names)):
        i = train.names.index(name)
        assert pair.preferred == "a" and pair.criterion == "text_match" and pair.extra["generated_by"] == "toy"
        np.testing.assert_array_equal(pair.a.features, train.motions[i])
        assert pair.b.features.shape == train.motions[i].shape and (pair.b.features == k + 0.5).all()
        assert pair.prompt == train.captions[i][0]  # the toy's even share is its first paraphrase
    assert calls[0][0] == [p.prompt for p in pairs]
    # the same seed draws the same subset and captions
    again = real_pairs.write_real_pairs(train, generate, tmp_path / "again", "toy", max_motions=10, seed=3)
    assert again == 10 and calls[1] == calls[0]

    R.main(R.RewardTrainConfig(data=str(data), out=str(tmp_path / "rw"), preset="tiny", steps=4, batch_size=16,
                               lr=2e-3, warmup=1, fn_threshold=0.95, eval_seeds=0, max_frames=28),
           text_encoder=HashTextEncoder(), progress=False)
    seen = []
    S.main(S.SPLTrainConfig(data=str(data), init=str(tmp_path / "rw"), out=str(tmp_path / "spl"), steps=2,
                            batch_size=16, fn_threshold=0.95, human_pairs=str(out / "pairs.jsonl"), human_batch=4,
                            eval_seeds=0, max_frames=28),
           text_encoder=HashTextEncoder(), on_step=seen.append, progress=False)
    assert len(seen) == 2 and all(np.isfinite(m["human"]) and m["human"] > 0 for m in seen)
    card = (tmp_path / "spl" / "README.md").read_text()
    assert "10 preference pairs from --human-pairs (weight 1.0, 4 per step; sources: 10 real_pairs)" in card
