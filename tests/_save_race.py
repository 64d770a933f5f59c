"""A process that saves its own model to each of several paths, in step with another (tests/test_reliability.py)."""

from __future__ import annotations


def saver(model_path: str, factor: float, barrier, targets: list[str], results) -> None:
    """Load the model, make it another model (its scaling times ``factor``), then save it to each target in turn.

    Every save starts when both processes reach the barrier, so the two race for each path;
    serialising takes a while, as it does for a large model, so both have checked the path
    before either writes. Puts ``(factor, target, "saved", id)`` or ``(factor, target, "refused", message)``.
    """
    import time

    from flax import serialization

    import autogenome_sc as ag

    serialize = serialization.msgpack_serialize
    serialization.msgpack_serialize = lambda *a, **k: (time.sleep(0.5), serialize(*a, **k))[1]
    model = ag.read_model(model_path)
    model.scaler_scale_ = model.scaler_scale_ * factor  # other weights: another checksum
    for target in targets:
        barrier.wait(timeout=120)
        try:
            model.save(target)
            results.put((factor, target, "saved", model.id_))
        except FileExistsError as e:
            results.put((factor, target, "refused", str(e)))
