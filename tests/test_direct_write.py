"""server.direct_write: .npy files written with O_DIRECT are the bytes np.save writes."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest

from server import direct_write
from server.direct_write import save_npy


@pytest.fixture
def direct_only(monkeypatch) -> list[int]:
    """Fails a test whose write falls back to np.save; lists the flags of each open."""
    flags: list[int] = []
    real_open = os.open

    def spy(path, flag, *args):
        flags.append(flag)
        return real_open(path, flag, *args)

    def no_fallback(path, array):
        raise AssertionError("fell back to np.save: O_DIRECT was not used")

    monkeypatch.setattr(direct_write.os, "open", spy)
    monkeypatch.setattr(direct_write, "_buffered", no_fallback)
    return flags


@pytest.mark.parametrize(
    ("shape", "dtype"),
    [
        ((37, 53, 4), np.float32),  # not a multiple of the block size: a padded, truncated tail
        ((992,), np.float32),  # header + data exactly one block: nothing to truncate
        ((3, 5, 3), np.uint8),
        ((0, 4), np.float32),
        ((9, 7, 3), np.uint16),
    ],
)
def test_same_bytes_as_np_save(
    tmp_path: Path, shape: tuple[int, ...], dtype: type, direct_only
) -> None:
    a = (np.random.default_rng(1).random(shape) * 250).astype(dtype)
    save_npy(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", a, allow_pickle=False)
    assert (tmp_path / "a.npy").read_bytes() == (tmp_path / "b.npy").read_bytes()
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), a)
    assert direct_only and all(f & os.O_DIRECT for f in direct_only)


def test_files_larger_than_the_buffer_and_reuse(tmp_path: Path, monkeypatch, direct_only) -> None:
    """Several chunks per file, the one buffer reused across files of different sizes: every
    file holds its own array (a stale byte from the previous file would show)."""
    monkeypatch.setattr(direct_write, "CHUNK", 3 * direct_write.BLOCK)
    monkeypatch.setattr(direct_write, "_local", direct_write.threading.local())
    rng = np.random.default_rng(2)
    arrays = [rng.random(s, dtype=np.float32) for s in [(50, 40, 4), (7, 9, 4), (33, 61, 3)]]
    for i, a in enumerate(arrays):
        save_npy(tmp_path / f"{i}.npy", a)
    for i, a in enumerate(arrays):
        np.save(tmp_path / "ref.npy", a, allow_pickle=False)
        assert (tmp_path / f"{i}.npy").read_bytes() == (tmp_path / "ref.npy").read_bytes()


def test_not_contiguous_and_read_only(tmp_path: Path, direct_only) -> None:
    a = np.arange(2 * 30 * 20 * 4, dtype=np.float32).reshape(2, 30, 20, 4)[1, ::-1, :, :3]
    a.flags.writeable = False
    save_npy(tmp_path / "a.npy", a)
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), a)


def test_falls_back_where_o_direct_is_refused(tmp_path: Path, monkeypatch) -> None:
    real_open = os.open

    def no_direct(path, flags, *args):
        if flags & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, *args)

    monkeypatch.setattr(direct_write.os, "open", no_direct)
    a = np.random.default_rng(3).random((21, 13, 4), dtype=np.float32)
    save_npy(tmp_path / "a.npy", a)
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), a)


def test_falls_back_when_a_direct_write_is_refused(tmp_path: Path, monkeypatch) -> None:
    def refuse(fd, data, offset):
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(direct_write.os, "pwrite", refuse)
    a = np.random.default_rng(4).random((21, 13, 4), dtype=np.float32)
    save_npy(tmp_path / "a.npy", a)
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), a)


def test_a_full_disk_is_an_error(tmp_path: Path, monkeypatch) -> None:
    def full(fd, data, offset):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(direct_write.os, "pwrite", full)
    with pytest.raises(OSError) as err:
        save_npy(tmp_path / "a.npy", np.zeros((8, 8, 4), np.float32))
    assert err.value.errno == errno.ENOSPC


def test_platforms_without_o_direct_write_plain_npy(tmp_path: Path, monkeypatch) -> None:
    # macOS and Windows have no os.O_DIRECT: the module must not touch it there.
    monkeypatch.setattr(direct_write, "O_DIRECT", 0)
    flags: list[int] = []
    real_open = os.open
    monkeypatch.setattr(
        direct_write.os, "open", lambda p, f, *a: flags.append(f) or real_open(p, f, *a)
    )
    a = np.random.default_rng(5).random((9, 7, 4), dtype=np.float32)
    save_npy(tmp_path / "a.npy", a)
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), a)
    assert not any(f & os.O_DIRECT for f in flags)


@pytest.fixture
def small_split(monkeypatch) -> None:
    """Two-half writes of small files: chunks of 2 blocks, files of 3 blocks and more split."""
    monkeypatch.setattr(direct_write, "CHUNK", 2 * direct_write.BLOCK)
    monkeypatch.setattr(direct_write, "SPLIT_BYTES", 3 * direct_write.BLOCK)
    monkeypatch.setattr(direct_write, "_local", direct_write.threading.local())


@pytest.mark.parametrize("n", [3 * 1024 - 32, 3 * 1024 - 31, 4096, 5000, 6 * 1024 - 32, 9999])
def test_two_halves_written_at_once_are_the_bytes_of_np_save(
    tmp_path: Path, n: int, small_split, direct_only, monkeypatch
) -> None:
    """A file split into two halves (one on the helper thread) is still np.save's bytes: sizes
    just below, at and above a block boundary, halves of several chunks; both threads wrote."""
    threads: set[str] = set()
    real_pwrite = os.pwrite

    def spy(fd, data, offset):
        threads.add(direct_write.threading.current_thread().name)
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(direct_write.os, "pwrite", spy)
    a = np.random.default_rng(n).random(n, dtype=np.float32)
    save_npy(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", a, allow_pickle=False)
    assert (tmp_path / "a.npy").read_bytes() == (tmp_path / "b.npy").read_bytes()
    assert len(threads) == 2 and any(t.startswith("warpdiff-write") for t in threads)


def test_a_full_disk_in_the_second_half_is_an_error(
    tmp_path: Path, small_split, monkeypatch
) -> None:
    """ENOSPC raised on the helper thread reaches the caller (the upload then fails with
    disk_full instead of storing a truncated frame)."""
    real_pwrite = os.pwrite

    def full_past_first_half(fd, data, offset):
        if offset > 0 and direct_write.threading.current_thread().name.startswith("warpdiff-write"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(direct_write.os, "pwrite", full_past_first_half)
    with pytest.raises(OSError) as err:
        save_npy(tmp_path / "a.npy", np.ones(5000, np.float32))
    assert err.value.errno == errno.ENOSPC


def test_a_short_write_is_a_full_disk(tmp_path: Path, small_split, monkeypatch) -> None:
    real_pwrite = os.pwrite

    def short(fd, data, offset):
        return real_pwrite(fd, data[: len(data) - direct_write.BLOCK], offset)

    monkeypatch.setattr(direct_write.os, "pwrite", short)
    with pytest.raises(OSError) as err:
        save_npy(tmp_path / "a.npy", np.ones(5000, np.float32))
    assert err.value.errno == errno.ENOSPC
