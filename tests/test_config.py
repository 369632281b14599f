import pytest

from omnisource.config import ConfigError, dump_config, load_config


def test_defaults_and_overrides():
    cfg = load_config(overrides=["train.epochs=5", "train.amp=true", "target.val_groups=['01','02']",
                                 "mode=pixels", "train.lr=1e-3"])
    assert cfg.train.epochs == 5 and cfg.train.amp is True
    assert cfg.target.val_groups == ["01", "02"]
    assert cfg.mode == "pixels" and cfg.train.lr == pytest.approx(1e-3)


def test_yaml_file_then_override(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("train:\n  epochs: 7\n  optimizer: adamw\nfeatures:\n  size: 160\n")
    cfg = load_config(f, ["train.epochs=2"])
    assert (cfg.train.epochs, cfg.train.optimizer, cfg.features.size) == (2, "adamw", 160)
    again = tmp_path / "again.yaml"
    again.write_text(dump_config(cfg))
    assert load_config(again) == cfg


@pytest.mark.parametrize("override, message", [
    ("train.epoch=3", "train.epoch: unknown key; allowed: "),
    ("train.epochs=abc", "train.epochs: expected an integer, got 'abc'"),
    ("train.optimizer=adam", "train.optimizer: 'adam' is not allowed; expected one of 'sgd', 'adamw'"),
    ("train.epochs=0", "train.epochs: must be at least 1"),
    ("train.amp=maybe", "train.amp: expected true or false"),
    ("nosection.x=1", "nosection: unknown key"),
    ("train", "train: overrides look like section.field=value"),
])
def test_errors_name_the_field(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(overrides=[override])
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    notmap = tmp_path / "list.yaml"
    notmap.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(notmap)
