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
    ("omni.calibrate=keep mode=pixels", "omni.calibrate: per-class thresholds cross-fit teacher heads on cached "
                                        "features: they need mode=features"),
    ("omni.calibrate=precision omni.filter=agreement", "omni.calibrate: the 'agreement' filter uses no threshold"),
    ("omni.calibrate_value=1.5", "omni.calibrate_value: must be in [0, 1]"),
    ("omni.calibrate_range=[0.8,0.2]", "omni.calibrate_range: must be [low, high] in [0, 1]"),
    ("omni.calibrate_folds=1", "omni.calibrate_folds: must be at least 2"),
])
def test_errors_name_the_field(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(overrides=override.split(" "))
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_the_frame_level_head_is_a_one_line_error_in_pixel_mode():
    with pytest.raises(ConfigError) as err:
        load_config(overrides=["mode=pixels", "features.head=frames"])
    assert str(err.value).startswith("features.head: frames ") and "mode=features" in str(err.value)
    assert "\n" not in str(err.value)
    assert load_config(overrides=["features.head=frames"]).features.head == "frames"  # feature mode: fine


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


def test_teacher_configs_apply_their_overrides_and_fail_in_one_line():
    from omnisource.config import ConfigError, load_config, source_teachers, teacher_config

    cfg = load_config(None, ["mode=pixels", "omni.teachers=[{name: slow, overrides: {model.name: slowonly_r50, "
                             "media.sampler: dense, train.epochs: 3}}]",
                             "web=[{name: a, root: x, teachers: [slow]}, {name: b, root: y}]"])
    t = teacher_config(cfg, "slow")
    assert (t.model.name, t.media.sampler, t.train.epochs, t.train.run_name) == ("slowonly_r50", "dense", 3, "slow")
    assert cfg.model.name != "slowonly_r50"  # the experiment's own config is untouched
    assert source_teachers(cfg, cfg.web[0]) == ["slow"] and source_teachers(cfg, cfg.web[1]) == ["target_only"]
    bad = {
        "omni.teachers=[{name: t, overrides: {web: []}}]": "a teacher may set model, media, train, features",
        "omni.teachers=[{name: t, overrides: {model.nme: x}}]": "model.nme: unknown key",
        "omni.teachers=[{name: t, overrides: {train.epochs: 0}}]": "train.epochs: must be at least 1",
        "omni.teachers=[{name: target_only}]": "is train.run_name",
        "omni.teachers=[{name: a}, {name: a}]": "unique",
    }
    for override, message in bad.items():
        with pytest.raises(ConfigError, match=message):
            load_config(None, ["mode=pixels", override])
    with pytest.raises(ConfigError, match="share the experiment's feature cache"):
        load_config(None, ["omni.teachers=[{name: t, overrides: {features.frames: 4}}]"])


def test_shipped_configs_load_and_the_gpu_recipe_names_a_2d_and_a_3d_teacher():
    from pathlib import Path

    from omnisource.config import source_teachers, teacher_config

    root = Path(__file__).parent.parent / "configs"
    for path in sorted(root.glob("*.yaml")):
        load_config(path)
    cfg = load_config(root / "kinetics400_pixel_gpu.yaml")
    teachers = {s.name: source_teachers(cfg, s) for s in cfg.web}
    assert teachers == {"images": ["tsn_r50"], "videos": ["target_only"], "untrimmed": ["target_only"]}
    assert teacher_config(cfg, "tsn_r50").model.name == "tsn_resnet50" and cfg.model.name == "slowonly_r50"
    assert [s.batch_ratio for s in cfg.web] == [0.5, 0.5, 0.5]  # 2:1:1:1 (OmniSource Table 2)
    assert cfg.omni.untrimmed == "clips" and cfg.train.amp and cfg.train.channels_last


def test_list_item_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("web:\n  - {name: a, root: /data/a}\n  - {name: b, root: /data/b, batch_ratio: 0.25}\n")
    cfg = load_config(f, ["web[0].batch_ratio=1", "web[-1].weight=2", "target.val_groups[1]=12"])
    assert [w.batch_ratio for w in cfg.web] == [1.0, 0.25] and cfg.web[1].weight == 2.0
    assert cfg.target.val_groups == ["08", "12", "10", "11"]  # a default list, one item changed
    for override, message in [("web[2].batch_ratio=1", "web[2].batch_ratio: no item 2; web has 2 item(s)"),
                              ("train[0]=1", "train is not a list"),
                              ("web[0].ratio=1", "web[0].ratio: unknown key; allowed: batch_ratio")]:
        with pytest.raises(ConfigError) as err:
            load_config(f, [override])
        assert message in str(err.value)
    with pytest.raises(ConfigError, match=r"no item 0; web has 0 item\(s\)"):
        load_config(None, ["web[0].batch_ratio=1"])


def test_a_web_source_without_a_weight_takes_its_kinds_and_a_set_weight_stays(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("web:\n  - {name: a, kind: image}\n  - {name: b, kind: trimmed}\n  - {name: c, kind: untrimmed}\n"
                 "  - {name: d, kind: image, weight: 1}\n  - {name: e, kind: untrimmed, weight: null}\n")
    cfg = load_config(f, ["web[1].kind=untrimmed"])  # the kind as finally set decides
    assert [w.loss_weight() for w in cfg.web] == [0.25, 0.25, 0.25, 1.0, 0.25]
    assert [w.loss_weight() for w in load_config(f).web] == [0.25, 0.5, 0.25, 1.0, 0.25]
    with pytest.raises(ConfigError, match=r"web\[0\].weight: must be 0 or more"):
        load_config(f, ["web[0].weight=-1"])


def test_a_saved_config_keeps_an_unset_weight_unset_so_a_later_kind_decides_it(tmp_path):
    # The workspace's config.yaml is a dump of the first command's config; editing a source's kind
    # there (or with `config set`) must give the new kind's weight, not the old kind's, resolved.
    first = load_config(None, ["web=[{name: a, kind: image}, {name: b, kind: image, weight: 0.7}]"])
    saved = tmp_path / "config.yaml"
    saved.write_text(dump_config(first))
    assert "weight: null" in saved.read_text() and "weight: 0.7" in saved.read_text()
    edited = load_config(saved, ["web[0].kind=trimmed", "web[1].kind=trimmed"])
    assert [w.loss_weight() for w in edited.web] == [0.5, 0.7]


def test_paths_resolve_against_the_config_file_not_the_current_directory(tmp_path, monkeypatch):
    folder = tmp_path / "configs"
    folder.mkdir()
    f = folder / "exp.yaml"
    f.write_text("target: {root: ../data/videos}\nmodel: {pretrained: imagenet}\n"
                 "web:\n  - {name: a, root: web/a}\nfeatures: {cache_root: cache}\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_config(f, ["target.annotations=lists/train.csv"])
    assert cfg.target.root == str(tmp_path / "data" / "videos")
    assert cfg.web[0].root == str(folder / "web" / "a") and cfg.features.cache_root == str(folder / "cache")
    assert cfg.model.pretrained == "imagenet"  # a keyword, not a path
    assert cfg.target.annotations == str(elsewhere / "lists" / "train.csv")  # command line: the current directory


def test_every_config_key_is_documented():
    from omnisource.config_io import config_reference

    rows = {key: (tp, default, doc) for key, tp, default, doc in config_reference()}
    assert all(doc for _, _, doc in rows.values()), [k for k, v in rows.items() if not v[2]]
    assert rows["train.epochs"][:2] == ("int", "10") and rows["omni.filter"][0] == "confidence | agreement | both | none"
    assert rows["web[i].batch_ratio"][0] == "float" and rows["target.root"][0] == "path"
