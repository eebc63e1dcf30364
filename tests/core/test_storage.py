"""pneumo.storage: S3 URIs and training sources of several prefixes (no servers)."""

from __future__ import annotations

import pytest

from pneumo.storage import join_sources, split_sources, split_uri


def test_a_source_is_one_prefix_or_several():
    assert split_sources("s3://raw/clinic") == ["s3://raw/clinic"]
    assert split_sources(" s3://raw/clinic/ , s3://raw/feedback") == ["s3://raw/clinic", "s3://raw/feedback"]
    assert join_sources(["s3://raw/a", "s3://raw/b", "s3://raw/a"]) == "s3://raw/a,s3://raw/b"
    assert split_uri("s3://raw/some/prefix/") == ("raw", "some/prefix")


@pytest.mark.parametrize("bad", ["", " , ", "s3://raw/a,/local/folder", "https://raw/a"])
def test_anything_but_s3_uris_is_refused(bad: str):
    with pytest.raises(ValueError):
        split_sources(bad)
