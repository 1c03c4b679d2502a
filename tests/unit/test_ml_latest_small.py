"""bench/ml_latest_small.py on a small archive of the same layout: digest check, columns, quoting, genres."""

from __future__ import annotations

import hashlib
import io
import tarfile

import pytest

from bench import ml_latest_small as mls
from rayrec.evaluation.data import make_events, make_items
from rayrec.exceptions import RayrecError

RATINGS = "userId,movieId,rating,timestamp\n1,31,2.5,1260759144\n1,1029,4.0,1260759179\n2,31,5.0,1260759100\n"
MOVIES = (
    "movieId,title,genres\n31,Dangerous Minds (1995),Drama\n"
    '1029,"American President, The (1995)",Comedy|Drama|Romance\n77,Nothing (2001),(no genres listed)\n'
)


def _archive(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, text in (("ratings.csv", RATINGS), ("movies.csv", MOVIES)):
            data = text.encode()
            info = tarfile.TarInfo(mls.MEMBER.format(name=name))
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    path = tmp_path / "source.tar.gz"
    path.write_bytes(buf.getvalue())
    return path, hashlib.sha256(buf.getvalue()).hexdigest()


def test_fetch_checks_the_digest_then_converts(tmp_path):
    source, digest = _archive(tmp_path)
    cache = tmp_path / "cache"
    with pytest.raises(RayrecError, match="sha256"):
        mls.fetch(cache, url=source.as_uri(), sha256="0" * 64)
    assert not (cache / mls.SDIST).exists()  # a wrong file is not kept
    sdist = mls.fetch(cache, url=source.as_uri(), sha256=digest)
    assert sdist == cache / mls.SDIST and sdist.read_bytes() == source.read_bytes()
    source.unlink()  # cached: a second call does not download
    assert mls.fetch(cache, url=source.as_uri(), sha256=digest) == sdist

    interactions, items = mls.convert(sdist)
    assert interactions.column_names == ["user_id", "item_id", "timestamp", "rating"]
    assert interactions.to_pylist()[1] == {"user_id": "1", "item_id": "1029", "timestamp": 1260759179, "rating": 4.0}
    assert items.to_pylist() == [
        {"item_id": "31", "title": "Dangerous Minds (1995)", "genres": "Drama", "category": "Drama"},
        {"item_id": "1029", "title": "American President, The (1995)", "genres": "Comedy, Drama, Romance",
         "category": "Comedy"},
        {"item_id": "77", "title": "Nothing (2001)", "genres": "", "category": None},
    ]
    # what rayrec eval makes of them: events by time, text from title and genres
    events = make_events(interactions)
    assert [(e.user, e.item, e.rating) for e in events] == [("2", "31", 5.0), ("1", "31", 2.5), ("1", "1029", 4.0)]
    texts = make_items(items)["text"].to_pylist()
    assert texts == ["Dangerous Minds (1995). Drama", "American President, The (1995). Comedy, Drama, Romance",
                     "Nothing (2001)"]
