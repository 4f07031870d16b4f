"""CycleGAN's image pools (distgen/families/cyclegan.py ImagePool) stored and checkpointed as uint8:
the bytes a checkpoint holds, and a resumed pool returning exactly what the uninterrupted one does."""
from __future__ import annotations

import io

import torch

from distgen.families.cyclegan import ImagePool


def fakes(n: int, gen: torch.Generator) -> torch.Tensor:
    return torch.tanh(torch.randn(n, 3, 32, 32, generator=gen) * 2)  # what a generator's tanh gives


def test_a_checkpointed_pool_is_one_byte_a_value():
    gen = torch.Generator().manual_seed(0)
    pool = ImagePool(50)
    pool.query(fakes(50, gen))
    state = pool.state_dict()
    assert state["images"].dtype == torch.uint8 and state["images"].shape == (50, 3, 32, 32)
    saved = io.BytesIO()
    torch.save(state, saved)
    values = 50 * 3 * 32 * 32
    assert values <= len(saved.getvalue()) < values + 4096  # a byte a value (float32 was 4 bytes)


def test_a_resumed_pool_gives_the_same_images():
    gen = torch.Generator().manual_seed(1)
    torch.manual_seed(1)
    pool = ImagePool(6)
    first = fakes(6, gen)
    pool.query(first)
    # what the pool holds is what G made, to uint8 precision (the price of a byte a value)
    torch.testing.assert_close(torch.stack(pool.images).float() / 127.5 - 1, first, rtol=0, atol=0.5 / 127.5 + 1e-6)
    buffer = io.BytesIO()
    torch.save(pool.state_dict(), buffer)
    resumed = ImagePool(6)
    resumed.load_state_dict(torch.load(io.BytesIO(buffer.getvalue()), weights_only=True))
    rng = torch.get_rng_state()
    later = [fakes(4, gen) for _ in range(5)]
    straight = [pool.query(x) for x in later]
    torch.set_rng_state(rng)
    again = [resumed.query(x) for x in later]
    for a, b in zip(straight, again):
        assert torch.equal(a, b)  # exact: both pools hold the same bytes
    assert any(not torch.equal(out, x) for out, x in zip(straight, later))  # history was returned


def test_a_float_pool_from_an_older_checkpoint_still_loads():
    pool = ImagePool(2)
    pool.load_state_dict({"size": 2, "images": torch.tensor([-1.0, 0.0, 1.0]).view(1, 3, 1, 1).repeat(2, 1, 1, 1)})
    assert [im.dtype for im in pool.images] == [torch.uint8] * 2
    assert pool.images[0].flatten().tolist() == [0, 128, 255]
