"""Storage URLs in canonical form: prefixes cannot be escaped by spelling."""

from __future__ import annotations

import pytest

from rainier.storage.location import StorageUrlError, is_within, join, normalize, relative


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("s3://bucket/a//b/", "s3://bucket/a/b"),
        ("S3://bucket/./a", "s3://bucket/a"),
        ("/srv/store/", "file:///srv/store"),
        ("file:///srv//store/x", "file:///srv/store/x"),
    ],
)
def test_urls_have_one_canonical_form(raw: str, canonical: str) -> None:
    assert normalize(raw) == canonical


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("s3://bucket/acme/../other", "'..'"),
        ("gs://bucket/x", "scheme 'gs'"),
        ("s3://", "names a bucket"),
        ("file://relative/path", "absolute path"),
        ("relative/path", "neither a storage URL nor an absolute path"),
    ],
)
def test_unusable_urls_are_refused_saying_why(raw: str, reason: str) -> None:
    with pytest.raises(StorageUrlError, match=reason):
        normalize(raw)


def test_a_prefix_contains_only_what_lies_below_it() -> None:
    assert is_within("s3://b/acme/jobs/j1", "s3://b/acme/")
    assert not is_within("s3://b/acme-evil/x", "s3://b/acme")
    assert not is_within("s3://other/acme/x", "s3://b/acme")
    assert relative("s3://b/acme/jobs/j1", "s3://b/acme") == "jobs/j1"
    assert join("s3://b/", "acme", "jobs/j1/") == "s3://b/acme/jobs/j1"
    with pytest.raises(StorageUrlError):
        join("s3://b/acme", "../other")
