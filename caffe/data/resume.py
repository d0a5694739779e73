"""Checks for the resume state of data layers (``Layer.state_dict`` / ``load_state_dict``).

A saved state comes from a file, so every value is checked for its type and range before a
layer uses it; a bad value raises ValueError or TypeError (the solver names the file)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def fields(state: object, keys: tuple[str, ...], what: str) -> list:
    """The values of ``keys`` in the dict ``state``, which must hold exactly those keys."""
    if not isinstance(state, Mapping):
        raise TypeError(f"{what} must be a dict, got {type(state).__name__}")
    if set(state) != set(keys):
        raise ValueError(f"{what} must hold the keys {sorted(keys)}, got {sorted(state)}")
    return [state[k] for k in keys]


def checked_int(value: object, low: int, high: int, what: str) -> int:
    """``value`` as an int in ``[low, high)`` (booleans are not ints here)."""
    if type(value) is not int:
        raise TypeError(f"{what} must be an integer, got {type(value).__name__}")
    if not low <= value < high:
        raise ValueError(f"{what} is {value}, outside [{low}, {high})")
    return value


def checked_permutation(value: object, n: int, what: str) -> np.ndarray:
    """``value`` (a list) as an int64 array holding every integer below ``n`` once."""
    if not isinstance(value, (list, tuple)) or len(value) != n:
        raise ValueError(f"{what} must be a list of {n} integers")
    if not all(type(v) is int for v in value):
        raise TypeError(f"{what} must hold integers only")
    if n and (min(value) < 0 or max(value) >= n):
        raise ValueError(f"{what} must be a permutation of 0..{n - 1}")
    arr = np.asarray(value, dtype=np.int64).reshape(n)
    if not (np.bincount(arr, minlength=n) == 1).all():
        raise ValueError(f"{what} must be a permutation of 0..{n - 1}")
    return arr


def _same_layout(value: object, like: object) -> bool:
    if isinstance(like, Mapping):
        return (isinstance(value, Mapping) and set(value) == set(like)
                and all(_same_layout(value[k], like[k]) for k in like))
    if type(like) is int:
        return type(value) is int and 0 <= value < 1 << 128
    return type(value) is type(like) and (not isinstance(like, str) or value == like)


def set_rng_state(rng: np.random.Generator, state: object, what: str) -> None:
    """Give ``rng`` a state saved from ``rng.bit_generator.state`` of the same kind."""
    if not _same_layout(state, rng.bit_generator.state):
        raise ValueError(f"{what} is not a {type(rng.bit_generator).__name__} generator state")
    rng.bit_generator.state = dict(state)
