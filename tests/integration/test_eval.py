"""`rayrec eval` end to end on a tiny dataset in files: the real encoder, the real actors, the real CLI."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from rayrec.cli import main
from tests.unit.test_evaluation import HISTORY, ITEMS, REPLAY


def _write(tmp_path) -> tuple[str, str]:
    events = HISTORY + REPLAY
    inter = tmp_path / "interactions.csv"
    pacsv.write_csv(
        pa.table({
            "user_id": [e.user for e in events],
            "item_id": [e.item for e in events],
            "timestamp": [int(e.time) for e in events],
            "rating": [e.rating for e in events],
        }),
        inter,
    )
    items = tmp_path / "items.parquet"
    titles = [
        "A space opera", "Another space opera", "A romantic comedy", "A horror film", "A cooking show", "A war drama"
    ]
    pq.write_table(
        pa.table({"item_id": ITEMS, "title": titles, "genre": ["sf", "sf", "romance", "horror", "food", "war"]}), items
    )
    return str(inter), str(items)


def test_rayrec_eval_on_files(ray_session, tmp_path, capsys):
    inter, items = _write(tmp_path)
    plot = tmp_path / "hr.png"
    share = len(HISTORY) / (len(HISTORY) + len(REPLAY))
    code = main(["eval", "--interactions", inter, "--items", items, "--history-share", str(share), "--model", "text",
                 "--json", "--plot", str(plot), "--resamples", "50", "--no-progress"])
    assert code == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["params"]["history_events"] == len(HISTORY) and out["params"]["replayed_events"] == len(REPLAY)
    metrics = out["metrics"]
    assert set(metrics) == {"popularity", "itemknn", "ease", "static", "realtime", "sequential"}
    # The sequential policy ran through a system whose user actors loaded the model (else it raises); its
    # items are 64 (the model) + 6 (EASE's factors: rank 64 capped at the 6 items) + 64 (the two-tower part)
    # + 1 (equal norms) wide.
    assert metrics["sequential"]["events"] == 4 and out["params"]["sequential"]["item_vectors"].startswith("135-d")
    assert metrics["ease"]["events"] == 4 and len(out["params"]["ease"]["grid"]) == 13  # 6 lambdas, 4 decays, 3 clicks
    # The baselines' ranks worked out by hand in tests/unit/test_evaluation.py: [1, 2, 1, miss] and [1, 1, 1, miss].
    assert metrics["popularity"]["events"] == 4 and metrics["popularity"]["hr@10"]["value"] == 0.75
    assert metrics["popularity"]["mrr@10"]["value"] == round((1 + 0.5 + 1) / 4, 5)
    assert metrics["itemknn"]["mrr@10"]["value"] == 0.75
    # The last event's item was seen before: excluded, so no policy can hit it.
    for name in metrics:
        assert metrics[name]["hr@20"]["value"] <= 0.75
    assert plot.exists() and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out["params"]["item_space"] == "text"
    # u4 is the one user the history never saw: its one event is a popularity hit in every policy.
    cold_users = out["cold"]["users_without_history"]
    assert cold_users["events"] == 1 and all(cold_users[p]["value"] == 1.0 for p in metrics)
    assert out["cold"]["items_without_history"] == {"events": 0, **{p: None for p in metrics}}
    # The same replay in a space learned from the history (A and B are the only items liked there;
    # the other four are placed from their text). The baselines do not depend on the space.
    assert main(["eval", "--interactions", inter, "--items", items, "--history-share", str(share), "--model", "svd",
                 "--json", "--resamples", "50", "--no-progress"]) == 0
    learned = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (learned["params"]["item_space"] == "svd"
            and "4 items without history placed from text" in learned["params"]["item_vectors"])
    assert learned["metrics"]["popularity"] == metrics["popularity"]
    assert learned["metrics"]["itemknn"] == metrics["itemknn"] and learned["metrics"]["ease"] == metrics["ease"]
    # The default space: the two-tower model trained on the history (u1's and u2's A -> B are its two examples;
    # every item with any interaction has an id embedding, so only E and F come from text alone).
    assert main(["eval", "--interactions", inter, "--items", items, "--history-share", str(share),
                 "--json", "--resamples", "50", "--no-progress"]) == 0
    tower = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert tower["params"]["item_space"] == "two-tower"
    assert tower["params"]["item_vectors"].startswith("two-tower trained on the history, 64-d; 2 items without history")
    assert tower["metrics"]["popularity"] == metrics["popularity"] and tower["metrics"]["itemknn"] == metrics["itemknn"]
    assert tower["metrics"]["realtime"]["events"] == 4


def test_rayrec_eval_refuses_bad_input(tmp_path, capsys):
    inter, items = _write(tmp_path)
    assert main(["eval", "--interactions", inter]) == 2
    assert "--interactions and --items go together" in capsys.readouterr().err
    assert main(["eval", "--interactions", str(tmp_path / "nope.csv"), "--items", items]) == 2
    assert "does not exist" in capsys.readouterr().err
