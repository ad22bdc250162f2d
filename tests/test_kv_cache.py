"""KV ring buffer: wrap-around, validity, positions, per-item reset, snapshot/restore/clone."""

import torch

from aapt_world.attention import frame_visibility, window_offset
from aapt_world.kv_cache import KVCache

TPF, HEADS, HD = 2, 1, 2


def make(batch=2, window=2, layers=2):
    return KVCache(layers, batch, HEADS, HD, TPF, window, time_dim=HD)


def write_frames(cache):
    """One step: keys = each item's frame index; values also encode item and global step."""
    plan = cache.begin_step()
    b = cache.batch_size
    k = plan.frame.float().view(b, 1, 1, 1).expand(b, HEADS, TPF, HD)
    v = k + 100 * torch.arange(b).float().view(b, 1, 1, 1) + 1000 * (cache.step_count - 1)
    for layer in range(cache.num_layers):
        cache.write(layer, k, v, plan)
    return plan


def visible(cache, plan, item):
    """(frame held, temporal position) of every visible visual key of ``item``."""
    valid = (torch.ones(cache.length, dtype=torch.bool) if plan.key_valid is None
             else plan.key_valid[item, 0, 0])
    out = set()
    for i in range(cache.length):
        if valid[i]:
            out.add((int(cache.k[0][item, 0, i, 0]), int(plan.key_time[item, i])))
    return out


def expected(q, window):
    vis = frame_visibility(q + 1, window)[q].nonzero().flatten().tolist()
    off = window_offset(q, window)
    return {(j, 0 if j == 0 else j - off) for j in vis}


def test_ring_wraparound_validity_and_positions():
    window = 3
    cache = make(batch=1, window=window)
    ptrs = [t.data_ptr() for t in cache.k + cache.v]
    with torch.inference_mode():
        for q in range(15):
            plan = write_frames(cache)
            assert plan.slot == q % (window + 1)
            assert int(plan.query_time[0]) == q - window_offset(q, window) <= window + 1
            assert visible(cache, plan, 0) == expected(q, window)
            assert int(plan.key_time.max()) <= window + 1
            # steady state: everything visible, no mask needed
            assert (plan.key_valid is None) == (q >= window + 1)
    assert [t.data_ptr() for t in cache.k + cache.v] == ptrs
    assert cache.k[0].shape == (1, HEADS, TPF * (window + 2), HD)
    assert sorted(cache.slot_frame[0].tolist()) == [11, 12, 13, 14]


def test_per_item_reset():
    window = 2
    cache = make(batch=3, window=window)
    with torch.no_grad():
        for _ in range(6):
            write_frames(cache)
        cache.reset(torch.tensor([False, True, False]))
        assert cache.frame.tolist() == [6, 0, 6]
        for r in range(7):
            plan = write_frames(cache)
            assert plan.write_sink.tolist() == [False, r == 0, False]
            assert visible(cache, plan, 1) == expected(r, window)
            assert visible(cache, plan, 0) == expected(6 + r, window)
            assert visible(cache, plan, 2) == expected(6 + r, window)
        # the reset item's sink holds its new frame 0, the others keep their original sink
        sink = cache.k[0][:, 0, cache.sink_start, 0].tolist()
        assert sink == [0.0, 0.0, 0.0]
        sink_v = cache.v[0][:, 0, cache.sink_start, 0].tolist()
        assert sink_v == [0.0, 6100.0, 200.0]  # item 1 rewrote its sink at global step 6
        # reset by index list works too
        cache.reset([0])
        assert cache.frame.tolist() == [0, 7, 13]


def test_snapshot_restore_clone():
    cache = make(batch=2, window=2)
    with torch.no_grad():
        for _ in range(3):
            write_frames(cache)
        snap = cache.snapshot()
        twin = cache.clone()
        ref = [write_frames(twin) for _ in range(4)]
        ref_k = [t.clone() for t in twin.k]
        for _ in range(5):  # diverge, then go back
            write_frames(cache)
        cache.reset(torch.tensor([True, False]))
        write_frames(cache)
        ptr = cache.k[0].data_ptr()
        cache.restore(snap)
        assert cache.k[0].data_ptr() == ptr
        got = [write_frames(cache) for _ in range(4)]
        for a, b in zip(ref, got, strict=True):
            assert a.slot == b.slot and torch.equal(a.key_time, b.key_time)
            assert (a.key_valid is None) == (b.key_valid is None)
        for a, b in zip(ref_k, cache.k, strict=True):
            assert torch.equal(a, b)
        # the snapshot is not aliased: restoring twice gives the same state
        cache.restore(snap)
        assert cache.frame.tolist() == [3, 3] and cache.step_count == 3
        # the clone is independent of the original
        assert twin.frame.tolist() == [7, 7]


def test_writes_are_differentiable_and_detachable():
    cache = make(batch=1, window=2, layers=1)
    src = torch.ones(1, HEADS, TPF, HD, requires_grad=True)
    plan = cache.begin_step()
    cache.write(0, src * 2, src * 3, plan)
    assert cache.k[0].requires_grad
    (cache.k[0].sum() + cache.v[0].sum()).backward()
    # frame 0 is written twice (ring slot and sink): grad = 2 * (2 + 3)
    assert torch.allclose(src.grad, torch.full_like(src, 10.0))
    cache.detach_()
    assert not cache.k[0].requires_grad and cache.k[0].grad_fn is None


def test_keys_rotate_ring_by_window_relative_time():
    from aapt_world.rope import apply_rotary

    hd, time_dim = 8, 4
    cache = KVCache(1, 2, HEADS, hd, TPF, 2, time_dim=time_dim)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _ in range(6):
            plan = cache.begin_step()
            cache.write(0, torch.randn(2, HEADS, TPF, hd, generator=g),
                        torch.randn(2, HEADS, TPF, hd, generator=g), plan)
        stored = cache.k[0].clone()
        assert torch.equal(cache.k_time[0], stored[..., :time_dim])
        ang = plan.key_time[..., None].double() * torch.tensor([1.0, 0.01], dtype=torch.float64)
        cos, sin = ang.cos().float()[:, None], ang.sin().float()[:, None]
        expected = apply_rotary(stored, cos, sin)
        keys = cache.keys(0, cos, sin)  # in place into the scratch temporal channels
        assert keys.data_ptr() == cache.k[0].data_ptr()
        torch.testing.assert_close(keys, expected)
        assert torch.equal(keys[:, :, : cache.ring_start], stored[:, :, : cache.ring_start])
        assert torch.equal(cache.k_time[0], stored[..., :time_dim])  # the source is untouched
    # the autograd path gives the same keys out of place
    cache.k[0] = cache.k[0].clone().requires_grad_(True)
    torch.testing.assert_close(cache.keys(0, cos, sin), expected)
