"""Dotted ``section.key=value`` overrides through OmegaConf, every bad one reported at once."""

from __future__ import annotations

import dataclasses

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from trainbench.config import RunConfig

DERIVED_KEYS = {
    "parallel.dp": "DP is derived as GPUs / (TP * PP * CP); change --gpus or the layout instead",
    "train.ga": "GA is derived as GBS / (DP * MBS); change train.gbs or train.mbs instead",
}


def apply_overrides(tree: RunConfig, overrides: list[str]) -> tuple[RunConfig, set[str], list[str]]:
    """Return the overridden tree, the keys that were set, and one message per bad override."""
    base = OmegaConf.structured(tree)
    OmegaConf.set_struct(base, True)
    errors: list[str] = []
    keys: set[str] = set()
    for item in overrides:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            errors.append(f"override {item!r} is not of the form section.key=value (e.g. parallel.tp=4)")
            continue
        if "${" in value:
            errors.append(f"override {key}={value!r}: interpolation (${{...}}) is not supported; give a plain value")
            continue
        if key in DERIVED_KEYS:
            errors.append(f"override {key!r} is not settable: {DERIVED_KEYS[key]}")
            continue
        section, _, leaf = key.partition(".")
        if section not in ("model", "parallel", "train") or leaf not in _field_names(section):
            errors.append(_unknown_key_message(key))
            continue
        try:
            base = OmegaConf.merge(base, OmegaConf.from_dotlist([f"{key}={value}"]))
        except (OmegaConfBaseException, ValueError, yaml.YAMLError) as exc:  # YAML parse errors included
            expected = _field_types()[section][leaf]
            errors.append(f"override {key}={value!r}: expected {expected}; {str(exc).splitlines()[0]}")
            continue
        keys.add(key)
    result = OmegaConf.to_object(base)
    assert isinstance(result, RunConfig)
    return result, keys, errors


def _field_names(section: str) -> list[str]:
    return list(_field_types().get(section, {}))


def _field_types() -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for f in dataclasses.fields(RunConfig):
        sub = f.default_factory()  # type: ignore[misc,operator]
        out[f.name] = {g.name: str(g.type) for g in dataclasses.fields(sub)}
    return out


def _unknown_key_message(key: str) -> str:
    section = key.partition(".")[0]
    if section in ("model", "parallel", "train"):
        return f"unknown override key {key!r}; {section}.* keys are: {', '.join(_field_names(section))}"
    return f"unknown override key {key!r}; keys start with model., parallel. or train."
