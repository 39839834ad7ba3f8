"""The event recorder: per-batch sample columns, scalars standing for a whole batch, amendments."""

from __future__ import annotations

import numpy as np
import pytest

from simulator.metrics import EventRecorder


def test_scalars_are_broadcast_and_columns_keep_their_dtypes():
    rec = EventRecorder()
    rec.samples(sim_time_s=1.0, device=0, prediction=np.array([3, 4]), route="edge")
    rec.samples(sim_time_s=2.5, device=1, prediction=np.array([5]), route="edge")
    frame = rec.frame()
    assert frame["sim_time_s"].tolist() == [1.0, 1.0, 2.5]
    assert frame["device"].tolist() == [0, 0, 1]
    assert frame["prediction"].tolist() == [3, 4, 5]
    assert frame["route"].tolist() == ["edge"] * 3
    assert frame["device"].dtype == np.int64 and frame["sim_time_s"].dtype == np.float64


def test_a_column_scalar_in_one_batch_and_an_array_in_another():
    rec = EventRecorder()
    rec.samples(sim_time_s=0.0, threshold=0.5, label=np.array([1, 2]))
    rec.samples(sim_time_s=1.0, threshold=np.array([0.1, 0.2, 0.3]), label=np.array([3, 4, 5]))
    assert rec.frame()["threshold"].tolist() == [0.5, 0.5, 0.1, 0.2, 0.3]


def test_columns_of_different_lengths_are_refused():
    rec = EventRecorder()
    with pytest.raises(ValueError, match="one length"):
        rec.samples(sim_time_s=0.0, a=np.zeros(2), b=np.zeros(3))
    with pytest.raises(ValueError, match="one length"):
        rec.samples(sim_time_s=0.0, device=1)  # no column says how many samples


def test_amending_copies_instead_of_writing_into_shared_arrays():
    rec = EventRecorder()
    prediction = np.array([1, 2, 3])
    # the device passes one array as both the edge and the delivered prediction
    first = rec.samples(sim_time_s=0.0, prediction=prediction, delivered=prediction, latency_s=0.25)
    rec.samples(sim_time_s=1.0, prediction=np.array([7]), delivered=np.array([7]), latency_s=0.5)
    rec.amend_samples(first, np.array([1]), delivered=9, latency_s=np.nan)
    rec.amend_samples(first, np.array([2]), delivered=8)  # a second amendment of the same batch
    frame = rec.frame()
    assert prediction.tolist() == [1, 2, 3]  # the caller's array is untouched
    assert frame["prediction"].tolist() == [1, 2, 3, 7]
    assert frame["delivered"].tolist() == [1, 9, 8, 7]
    latency = frame["latency_s"].to_numpy()
    assert latency[0] == 0.25 and np.isnan(latency[1]) and latency[2:].tolist() == [0.25, 0.5]
