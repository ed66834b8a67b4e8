import json

from x3dsearch.cli import main


def test_flops_json(capsys):
    assert main(["flops", "--preset", "XS", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["flops"] == 605_256_512 and set(data["parts"]) == {"stem", "res2", "res3", "res4", "res5", "head"}
    assert sum(p["flops"] for p in data["parts"].values()) == data["flops"]


def test_presets_table(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    assert "16x5" in out and "4.732" in out


def test_bad_config_is_one_line_error(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("frames: 0\n")
    assert main(["flops", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "frames must be a positive integer" in err
    assert main(["flops", "--preset", "huge"]) == 2
    assert "unknown preset 'huge'" in capsys.readouterr().err
