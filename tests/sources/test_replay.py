"""The replay reader and source on the real recordings: merging files of one
symbol in receive-time order, resuming at an offset, partitioning, and
normalizing µs and ns receive timestamps."""

from __future__ import annotations

import gzip
from itertools import pairwise

import pytest

from core.events import RawChunk
from harness.realdata import lines, recv_ns, write_gz
from sources.binance import parse_chunk
from sources.files import group_streams, line_ts, read_stream
from sources.replay import ReplaySource


def flat(spec, skip: int = 0) -> list:
    return [r for block in read_stream(spec, skip=skip) for r in block]


def one_stream(paths) -> object:
    specs = group_streams([str(p) for p in paths])
    assert len(specs) == 1, specs
    return specs[0]


@pytest.fixture(scope="module")
def btc_pair(ws_dir):
    return ws_dir / "spot" / "btcusdt_20240808.gz", ws_dir / "spot" / "btcusdt_20240809.gz"


def test_two_files_of_one_symbol_merge_in_receive_time_order(btc_pair):
    spec = one_stream(btc_pair)
    assert spec.files == tuple(str(p) for p in btc_pair)
    merged = flat(spec)
    a, b = lines(btc_pair[0]), lines(btc_pair[1])
    assert len(merged) == len(a) + len(b)
    ts = [recv_ns(ln) for ln in merged]
    assert all(x <= y for x, y in pairwise(ts))
    assert sorted(merged) == sorted(a + b)
    assert merged == list(a + b)  # consecutive windows: one file after the other


def test_files_are_merged_by_time_not_by_name(tmp_path, btc_pair):
    # the later day gets the earlier name
    a, b = lines(btc_pair[0]), lines(btc_pair[1])
    write_gz(tmp_path / "spot" / "btcusdt_a.gz", b)
    write_gz(tmp_path / "spot" / "btcusdt_b.gz", a)
    assert flat(one_stream([tmp_path])) == list(a + b)


# The merge of overlapping files costs O(lines x block) (see the report), so
# the interleaving tests use a few thousand lines: still several read blocks.
def test_interleaved_split_merges_back_to_the_original_order(tmp_path, btc_pair):
    src = lines(btc_pair[0])[:5000]
    assert all(recv_ns(x) < recv_ns(y) for x, y in pairwise(src))  # no ties in this file
    write_gz(tmp_path / "spot" / "btcusdt_even.gz", src[0::2])
    # the other half as a plain (not gzip) recording
    p = tmp_path / "spot" / "btcusdt_odd.txt"
    p.write_bytes(b"".join(ln + b"\n" for ln in src[1::2]))
    spec = one_stream([tmp_path])
    assert len(spec.files) == 2
    assert flat(spec) == list(src)


def test_merge_with_timestamp_ties_is_stable_by_path_order(tmp_path, ws_dir):
    """usdm/btcusdt_20230404 has equal receive stamps; split into three files
    dealt round-robin, the merge must equal a stable sort on (time, file)."""
    src = lines(ws_dir / "usdm" / "btcusdt_20230404.dat.gz")[:6000]
    ts = [recv_ns(ln) for ln in src]
    assert any(x == y for x, y in pairwise(ts))
    parts = [src[i::3] for i in range(3)]
    for i, part in enumerate(parts):
        write_gz(tmp_path / "usdm" / f"btcusdt_{i}.dat.gz", part)
    expect = [ln for _, _, _, ln in sorted((recv_ns(ln), i, j, ln) for i, part in enumerate(parts)
                                           for j, ln in enumerate(part))]
    merged = flat(one_stream([tmp_path]))
    assert merged == expect
    assert sorted(merged) == sorted(src)


def test_a_line_without_timestamp_keeps_its_place(tmp_path, btc_pair):
    src = list(lines(btc_pair[0])[:3000])
    odd = src[1::2]
    bare = odd[700].split(b" ", 1)[1]  # the same message without its receive time
    odd_with = odd[:701] + [bare] + odd[701:]
    write_gz(tmp_path / "spot" / "btcusdt_0.gz", src[0::2])
    write_gz(tmp_path / "spot" / "btcusdt_1.gz", odd_with)
    merged = flat(one_stream([tmp_path]))
    i = merged.index(bare)
    assert merged[i - 1] == odd[700]  # right after its predecessor in its file
    assert [ln for ln in merged if ln != bare] == src
    assert line_ts(bare) == -1


def test_resume_yields_exactly_the_tail(btc_pair):
    spec = one_stream(btc_pair)
    full = flat(spec)
    blocks = [len(b) for b in read_stream(spec)]
    assert len(blocks) > 2
    for k in (0, 1, blocks[0] - 1, blocks[0], blocks[0] + 1, len(full) // 2, len(full) - 1, len(full),
              len(full) + 10):
        assert flat(spec, skip=k) == full[k:], k


def _drain(part) -> tuple[list, list, list]:
    """(records, each chunk's nbytes, snapshots after each batch) of a partition."""
    got: list = []
    nbytes: list[int] = []
    snaps: list = []
    while True:
        try:
            batch = part.next_batch()
        except StopIteration:
            return got, nbytes, snaps
        for chunk in batch:
            assert type(chunk) is RawChunk and (chunk.fmt, chunk.market, chunk.symbol) == ("ws", "spot", "BTCUSDT")
            assert len(chunk.records) <= 1000
            got.extend(chunk.records)
            nbytes.append(chunk.nbytes)
        snaps.append(part.snapshot())


@pytest.mark.parametrize("resume", [None, 0, 1, 5000, 41249, 99573])
def test_replay_partition_resumes_from_its_snapshot(btc_pair, resume):
    src = ReplaySource([str(p) for p in btc_pair], batch_size=1000)
    (part_name,) = src.list_parts()
    full = flat(src.streams[0])
    size = sum(p.stat().st_size for p in btc_pair)
    assert src.total_bytes == size
    start = (resume, 0) if resume is not None else None
    got, nbytes, snaps = _drain(src.build_part("read_ticks", part_name, start))
    assert got == full[resume or 0:]
    # the chunks' nbytes follow the files as read and add up to their size
    assert all(n >= 0 for n in nbytes) and sum(nbytes) == size and snaps[-1] == (len(full), size)
    # every snapshot is (records emitted, bytes reported) so far: resuming from
    # any of them continues exactly there, and the bytes add up once
    mid = snaps[len(snaps) // 2]
    rest, rest_bytes, _ = _drain(src.build_part("read_ticks", part_name, mid))
    assert rest == full[mid[0]:]
    assert all(n >= 0 for n in rest_bytes) and mid[1] + sum(rest_bytes) == size
    # a snapshot of the earlier format (records emitted only) still resumes
    old, _, _ = _drain(src.build_part("read_ticks", part_name, mid[0]))
    assert old == full[mid[0]:]


def test_one_partition_per_format_market_and_symbol(ws_dir):
    src = ReplaySource([str(ws_dir)])
    assert src.list_parts() == ["ws:spot:BTCUSDT", "ws:spot:ETHUSDT", "ws:usdm:BTCUSDT"]
    files = {s.name: [p.rsplit("/", 2)[-2] + "/" + p.rsplit("/", 1)[-1] for p in s.files] for s in src.streams}
    assert files == {
        "ws:spot:BTCUSDT": ["spot/btcusdt_20230405.dat.gz", "spot/btcusdt_20240808.gz", "spot/btcusdt_20240809.gz"],
        "ws:spot:ETHUSDT": ["spot/ethusdt_20240808.gz", "spot/ethusdt_20240809.gz"],
        "ws:usdm:BTCUSDT": ["usdm/btcusdt_20230404.dat.gz", "usdm/btcusdt_20230405.dat.gz"],
    }
    # the market can be forced
    assert [s.name for s in group_streams([str(ws_dir / "usdm")], market="spot")] == ["ws:spot:BTCUSDT"]


def test_microsecond_and_nanosecond_stamps_are_normalized(ws_dir):
    """2023 files stamp µs, 2024 files ns; merged in one stream they come out
    in time order on one ns clock, close to the exchange's own times."""
    spec = next(s for s in group_streams([str(ws_dir / "spot")]) if s.symbol == "BTCUSDT")
    merged = flat(spec)
    heads = [ln.split(b" ", 1)[0] for ln in merged]
    assert {len(h) for h in heads} == {16, 19}
    ts = [line_ts(ln) for ln in merged]
    assert ts == [int(h) * 1000 if len(h) == 16 else int(h) for h in heads]
    assert all(x <= y for x, y in pairwise(ts))
    n23 = len(lines(ws_dir / "spot" / "btcusdt_20230405.dat.gz"))
    assert all(len(h) == 16 for h in heads[:n23]) and all(len(h) == 19 for h in heads[n23:])
    # parsed events carry ns receive times within a few seconds of exchange time
    by_key, errors, _ = parse_chunk(RawChunk("ws", "spot", "BTCUSDT", merged))
    trades = [e for e in by_key["BTCUSDT"] if hasattr(e, "trade_id")]
    assert not errors and len(trades) > 20_000
    assert all(abs(t.ts_recv - t.ts_event) < 5 * 10**9 for t in trades)


def test_blank_lines_and_crlf_are_tolerated(tmp_path, btc_pair):
    src = list(lines(btc_pair[1])[:3000])
    p = tmp_path / "spot" / "btcusdt_crlf.gz"
    p.parent.mkdir(parents=True)
    with gzip.open(p, "wb") as f:
        f.write(b"\r\n".join(src[:1500]) + b"\r\n\r\n\n" + b"\n".join(src[1500:]))  # no final newline
    assert flat(one_stream([p])) == src


@pytest.fixture(scope="module")
def recording_and_klines(ws_dir, tmp_path_factory):
    """Two streams of one instrument: a spot BTCUSDT recording and the 1-minute
    klines of its trades as a Binance CSV archive (computed from them,
    :func:`harness.realdata.minute_klines`)."""
    from harness.realdata import minute_klines, trade_dicts

    rec = ws_dir / "spot" / "btcusdt_20240808.gz"
    d = tmp_path_factory.mktemp("two_streams")
    rows = [",".join(map(str, (k["t"], k["o"], k["h"], k["l"], k["c"], k["v"], k["T"], k["q"], k["n"], k["V"],
                                k["Q"], 0))) for k in minute_klines(trade_dicts(rec))]
    (d / "BTCUSDT-1m-2024-08-08.csv").write_text("\n".join(rows) + "\n")
    return [str(rec), str(d / "BTCUSDT-1m-2024-08-08.csv")]


def test_the_streams_of_one_instrument_are_one_partition_merged_in_time_order(recording_and_klines):
    from sources.files import instrument_groups, read_streams

    src = ReplaySource(recording_and_klines)
    (part,) = src.list_parts()
    assert part == "klines:spot:BTCUSDT:60000000000+ws:spot:BTCUSDT"
    specs = src.streams
    (group,) = instrument_groups(specs)
    runs = list(read_streams(group))
    merged = [(i, r) for i, recs in runs for r in recs]
    # every record of both streams, each stream in its own order
    for i, spec in enumerate(specs):
        assert [r for j, r in merged if j == i] == flat(spec)
    assert {i for i, _ in runs} == {0, 1} and len(runs) > 2  # interleaved, not one stream after the other

    def t(i: int, r) -> int:
        return line_ts(r) if specs[i].fmt == "ws" else int(r[6]) * 10**6  # a kline's close time

    times = [t(i, r) for i, r in merged]
    kl = [k for k, (i, _) in enumerate(merged) if specs[i].fmt == "klines"]
    assert all(times[k - 1] <= times[k] for k in kl if k)  # each kline comes after the lines before its close
    # resumed at any record of the merge, the rest comes exactly
    for skip in (1, len(merged) // 3, len(merged) - 1):
        assert [(i, r) for i, recs in read_streams(group, skip=skip) for r in recs] == merged[skip:]


def test_a_partition_of_two_streams_gives_chunks_of_one_stream_each(recording_and_klines):
    src = ReplaySource(recording_and_klines, batch_size=500)
    (part,) = src.list_parts()
    reader = src.build_part("read_ticks", part, None)
    chunks: list[RawChunk] = []
    while True:
        try:
            chunks.extend(reader.next_batch())
        except StopIteration:
            break
    assert {c.fmt for c in chunks if c.records} == {"ws", "klines"}
    assert all(c.source == part and len(c.records) <= 500 for c in chunks)
    assert sum(len(c.records) for c in chunks) == sum(len(flat(s)) for s in src.streams)
    klines = [e for c in chunks if c.fmt == "klines" for e in parse_chunk(c)[0]["BTCUSDT"]]
    assert len(klines) == len(flat(src.streams[0])) > 3  # every kline parsed, for the same instrument
