"""Shape buckets: padding up, slicing back, eager outside the buckets. A fake denoiser stands in for the UNet."""

from __future__ import annotations

import torch

from baton.models.types import Conditioning
from baton.optim.compile import StaticShapeDenoiser


class RecordingDenoiser:
    """Returns latents + timestep per row, and records the shapes it was called with."""

    def __init__(self) -> None:
        self.shapes: list[tuple[int, ...]] = []
        self.timestep_dtypes: list[torch.dtype] = []

    def __call__(self, latents, timesteps, conditioning: Conditioning):
        self.shapes.append(tuple(latents.shape))
        self.timestep_dtypes.append(timesteps.dtype)
        rows = latents.shape[0]
        assert conditioning.rows == rows and all(t.shape[0] == rows for t in conditioning.added.values())
        assert all(t.shape == (7, 3) for t in conditioning.shared.values())  # per key: never padded
        return latents + timesteps.view(-1, 1, 1, 1) + conditioning.hidden_states.mean() * 0


def inputs(rows: int, size: int = 8):
    latents = torch.arange(rows, dtype=torch.float32).view(rows, 1, 1, 1).expand(rows, 4, size, size).contiguous()
    timesteps = torch.full((rows,), 10, dtype=torch.int64)
    return latents, timesteps, Conditioning(torch.ones(rows, 3, 5), {"time_ids": torch.ones(rows, 6)},
                                            {"img_ids": torch.zeros(7, 3)})


def test_rows_are_padded_to_the_next_bucket_and_sliced_back():
    bucketed, eager = RecordingDenoiser(), RecordingDenoiser()
    denoiser = StaticShapeDenoiser(bucketed, eager, buckets=(1, 2, 4, 8), latent_shapes=[(4, 8, 8)], cuda_graphs=False)
    for rows, bucket in [(1, 1), (2, 2), (3, 4), (5, 8), (8, 8)]:
        latents, timesteps, conditioning = inputs(rows)
        out = denoiser(latents, timesteps, conditioning)
        assert bucketed.shapes[-1] == (bucket, 4, 8, 8)
        assert torch.equal(out, latents + 10)  # the real rows, untouched by the padding
    assert bucketed.timestep_dtypes == [torch.float32] * 5  # one dtype for every sampler: one graph
    assert eager.shapes == [] and denoiser.bucketed_calls == 5 and denoiser.eager_calls == 0


def test_shapes_outside_the_buckets_run_eagerly(caplog):
    bucketed, eager = RecordingDenoiser(), RecordingDenoiser()
    denoiser = StaticShapeDenoiser(bucketed, eager, buckets=(1, 2), latent_shapes=[(4, 8, 8)], cuda_graphs=False)
    denoiser(*inputs(3))  # more rows than the largest bucket
    denoiser(*inputs(3))
    denoiser(*inputs(1, size=16))  # a size that was not configured
    assert eager.shapes == [(3, 4, 8, 8), (3, 4, 8, 8), (1, 4, 16, 16)] and bucketed.shapes == []
    assert denoiser.eager_calls == 3
    warnings = [r for r in caplog.records if "outside the static buckets" in r.getMessage()]
    assert len(warnings) == 2  # once per shape


def test_warm_up_runs_every_bucket_at_every_size_largest_first():
    bucketed = RecordingDenoiser()
    denoiser = StaticShapeDenoiser(bucketed, RecordingDenoiser(), buckets=(1, 4, 2),
                                   latent_shapes=[(4, 8, 8), (4, 4, 6)], cuda_graphs=False)

    def example(rows, shape):
        latents, timesteps, conditioning = inputs(rows)
        return latents[..., : shape[1], : shape[2]], timesteps.float(), conditioning

    assert denoiser.warm_up(example, show_progress=False) >= 0
    assert bucketed.shapes == [(4, 4, 8, 8), (2, 4, 8, 8), (1, 4, 8, 8), (4, 4, 4, 6), (2, 4, 4, 6), (1, 4, 4, 6)]
