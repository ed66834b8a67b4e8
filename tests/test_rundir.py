from pathlib import Path

import pytest
import yaml

from x3dsearch.errors import UserError
from x3dsearch.rundir import RunDir, read_json_object
from x3dsearch.schedule import load_schedule


def test_resume_ignores_a_reworded_schedule_description_but_not_a_changed_field(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    run.create({"seed": 0, "proxy": {"epochs": 2, "description": "old words"}}, resume=False)
    run.create({"seed": 0, "proxy": {"epochs": 2, "description": "new words"}}, resume=True)
    with pytest.raises(UserError, match="--resume with different proxy"):
        run.create({"seed": 0, "proxy": {"epochs": 3, "description": "new words"}}, resume=True)
    with pytest.raises(UserError, match="--resume with different seed"):
        run.create({"seed": 1, "proxy": {"epochs": 2, "description": "old words"}}, resume=True)


def test_resume_accepts_a_run_recorded_before_a_new_optional_schedule_field(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    run.create({"seed": 0, "proxy": {"epochs": 2}}, resume=False)  # written before epochs_under existed
    run.create({"seed": 0, "proxy": {"epochs": 2, "epochs_under": None}}, resume=True)
    with pytest.raises(UserError, match="different proxy"):
        run.create({"seed": 0, "proxy": {"epochs": 2, "epochs_under": [[0.02, 16]]}}, resume=True)


def test_a_run_recorded_before_landing_resumes_only_with_its_full_last_step(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    run.create({"seed": 0}, resume=False)  # recorded before --land-within existed: always a full step
    with pytest.raises(UserError, match="different land_within"):
        run.create({"seed": 0, "land_within": 2 ** 0.5}, resume=True)
    run.create({"seed": 0, "land_within": 1.0}, resume=True)


def test_a_run_recorded_before_the_box_is_refused_in_one_line(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    run.create({"seed": 0}, resume=False)  # recorded before max_window existed: expansion ignored the bounds
    with pytest.raises(UserError, match="cannot be resumed: start a new -o/--output") as err:
        run.create({"seed": 0, "max_window": None}, resume=True)
    assert "\n" not in str(err.value)
    run = RunDir(tmp_path / "new")
    run.create({"seed": 0, "max_window": None}, resume=False)
    run.create({"seed": 0, "max_window": None}, resume=True)


def test_a_search_run_without_its_final_training_resumes_with_it(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    run.create({"target_gflops": 2.0, "final_training": False}, resume=False)
    run.create({"target_gflops": 2.0, "final_training": True}, resume=True)  # train the found model later
    with pytest.raises(UserError, match="--resume with different target_gflops"):
        run.create({"target_gflops": 3.0, "final_training": True}, resume=True)


def test_the_final_training_may_change_on_resume_until_it_has_begun(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    run.create({"seed": 0, "final_init": "inherit", "full_schedule": "cpu_full", "full": {"epochs": 8}}, resume=False)
    with pytest.raises(UserError, match="different final_init, seed"):  # with a search setting: refused, all named
        run.create({"seed": 1, "final_init": "scratch"}, resume=True)
    changed = {"seed": 0, "final_init": "scratch", "full_schedule": "long.yaml", "full": {"epochs": 16}}
    run.create(changed, resume=True)  # the search is the same: its final training starts afresh elsewhere
    assert run.settings() == changed  # recorded, so a later resume compares with what the final training uses
    run.final_dir.mkdir()  # once the final training has begun it stays as recorded
    with pytest.raises(UserError, match="different final_init .*its final training has begun in .*: delete that"):
        run.create({**changed, "final_init": "inherit"}, resume=True)
    run.create(changed, resume=True)
    old = RunDir(tmp_path / "old")
    old.create({"seed": 0, "out": "elsewhere"}, resume=False)  # recorded before --final-init (then it inherited)
    old.create({"seed": 0, "out": str(old.path), "final_init": "scratch"}, resume=True)  # and moved
    assert old.settings() == {"seed": 0, "out": "elsewhere", "final_init": "scratch"}
    old.final_dir.mkdir()
    with pytest.raises(UserError, match="different final_init"):
        old.create({"seed": 0, "final_init": "inherit"}, resume=True)


def test_resume_compares_what_a_schedule_name_resolved_to_not_the_name(tmp_path: Path) -> None:
    copy = tmp_path / "mine.yaml"  # the shipped entry copied to a file of another name, reworded, its name left out
    shipped = load_schedule("cpu_proxy_lean").to_dict()
    copy.write_text(yaml.safe_dump({k: v for k, v in shipped.items() if k != "name"} | {"description": "my words"}))
    assert load_schedule(str(copy)).recipe.name == "mine"
    run = RunDir(tmp_path / "run")
    run.create({"proxy_schedule": "cpu_proxy_lean", "proxy": load_schedule("cpu_proxy_lean").to_dict(),
                "space": "x3d_kinetics", "space_resolved": {"name": "x3d_kinetics", "crop_multiple": 8}},
               resume=False)
    run.create({"proxy_schedule": str(copy), "proxy": load_schedule(str(copy)).to_dict(),
                "space": "elsewhere/box.yaml", "space_resolved": {"name": "box", "crop_multiple": 8}}, resume=True)
    with pytest.raises(UserError, match="--resume with different proxy_schedule than"):
        run.create({"proxy_schedule": "cpu_proxy", "proxy": load_schedule("cpu_proxy").to_dict()}, resume=True)
    with pytest.raises(UserError, match="--resume with different space than"):
        run.create({"space": "x3d_kinetics", "space_resolved": {"name": "x3d_kinetics", "crop_multiple": 16}},
                   resume=True)


def test_resume_compares_the_schedule_name_of_a_run_recorded_without_its_resolved_form(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    run.create({"proxy_schedule": "cpu_proxy"}, resume=False)
    with pytest.raises(UserError, match="--resume with different proxy_schedule"):
        run.create({"proxy_schedule": "cpu_proxy_lean", "proxy": {"epochs": 2}}, resume=True)


def test_a_refused_resume_names_what_the_run_recorded(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    run.create({"seed": 0, "data": None, "proxy_schedule": "cpu_proxy", "proxy": load_schedule("cpu_proxy").to_dict()},
               resume=False)
    with pytest.raises(UserError, match=r"--resume with different data, proxy_schedule, seed than the run in .* \(it "
                                        r"recorded data none \(the default\); proxy_schedule cpu_proxy, which "
                                        r"differs in fewer_params_within; seed 0\)"):
        run.create({"seed": 1, "data": "mine", "proxy_schedule": "cpu_proxy_lean",
                    "proxy": load_schedule("cpu_proxy_lean").to_dict()}, resume=True)


def test_a_run_trained_on_mirrored_clips_does_not_resume_on_data_that_forbids_them(tmp_path: Path) -> None:
    old = RunDir(tmp_path / "old")
    old.create({"seed": 0}, resume=False)  # recorded before augment.json: its trainings mirrored clips
    old.create({"seed": 0, "horizontal_flip": True}, resume=True)
    with pytest.raises(UserError, match=r"different data \(its augment.json\) horizontal_flip .*recorded data \(its "
                                        r"augment.json\) horizontal_flip True"):
        old.create({"seed": 0, "horizontal_flip": False}, resume=True)
    assert old.settings_as_run()["horizontal_flip"] is True and "horizontal_flip" not in old.settings()
    new = RunDir(tmp_path / "new")
    new.create({"seed": 0, "horizontal_flip": False}, resume=False)
    assert new.settings_as_run()["horizontal_flip"] is False


def test_a_run_does_not_resume_on_changed_data(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    run.create({"seed": 0, "data": "mine", "data_fingerprint": "aaaa", "full_schedule": "a"}, resume=False)
    run.create({"seed": 0, "data": "mine", "data_fingerprint": "aaaa", "full_schedule": "a"}, resume=True)
    changed = r"the data of the run in .* \(mine\) has changed since the run began: its split lists, side files"
    for other in ({}, {"full_schedule": "b"}, {"seed": 1}):  # with or without another change
        with pytest.raises(UserError, match=changed):
            run.create({"seed": 0, "data": "mine", "data_fingerprint": "bbbb", "full_schedule": "a", **other},
                       resume=True)
    assert run.settings()["data_fingerprint"] == "aaaa" and run.settings()["full_schedule"] == "a"
    with pytest.raises(UserError, match=r"--resume with different data than"):  # another folder: named as such
        run.create({"seed": 0, "data": "theirs", "data_fingerprint": "bbbb", "full_schedule": "a"}, resume=True)
    with pytest.raises(UserError, match=r"different data \(its augment.json\) horizontal_flip"):
        run.create({"seed": 0, "data": "mine", "data_fingerprint": "bbbb", "full_schedule": "a",
                    "horizontal_flip": False}, resume=True)  # a new augment.json: the flip is named


def test_a_run_from_before_fingerprints_records_one_on_resume(tmp_path: Path) -> None:
    old = RunDir(tmp_path / "old")
    old.create({"seed": 0, "data": "mine"}, resume=False)
    old.create({"seed": 0, "data": "mine", "data_fingerprint": "bbbb"}, resume=True)  # nothing to compare with
    assert old.settings() == {"seed": 0, "data": "mine", "data_fingerprint": "bbbb"}
    with pytest.raises(UserError, match=r"has changed since the run began"):
        old.create({"seed": 0, "data": "mine", "data_fingerprint": "cccc"}, resume=True)


@pytest.mark.parametrize("damage, needle", [(b"target_gflops: [6\n", "not valid YAML"),
                                            (b"\xff\xfe\x00garbage", "is not a text file"),
                                            (b"- 6\n- 2\n", "it holds no settings mapping")])
def test_a_damaged_run_yaml_is_one_user_error_naming_it(tmp_path: Path, damage: bytes, needle: str) -> None:
    run = RunDir(tmp_path / "run")
    run.create({"target_gflops": 6}, resume=False)
    (run.path / "run.yaml").write_bytes(damage)
    with pytest.raises(UserError, match=needle):
        run.settings()
    with pytest.raises(UserError, match=needle):
        run.create({"target_gflops": 6}, resume=True)


def test_journal_lines_that_are_not_records_are_skipped_and_a_damaged_path_json_is_named(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    run.create({"target_gflops": 6}, resume=False)
    run.append({"config_key": "a", "status": "ok"})
    with open(run.journal_path, "ab") as f:
        f.write(b'null\n[1]\n"x"\n\xff\xfe\n')
    run.append({"config_key": "b", "status": "ok"})
    assert [r["config_key"] for r in run.records()] == ["a", "b"]
    (run.path / "path.json").write_text("[1, 2]")
    with pytest.raises(UserError, match=r"path\.json is damaged"):
        run.read_path()


def test_run_yaml_keeps_a_string_that_looks_like_an_exponent(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    run.create({"target_gflops": 6, "data_fingerprint": "12e4"}, resume=False)  # safe_dump leaves it unquoted
    assert run.settings()["data_fingerprint"] == "12e4"
    run.create({"target_gflops": 6, "data_fingerprint": "12e4"}, resume=True)  # the same data: it resumes


def test_a_damaged_json_record_names_its_file(tmp_path: Path) -> None:
    (tmp_path / "metrics.json").write_text('["not", "an", "object"]')
    with pytest.raises(UserError, match=r"metrics\.json is damaged \(not a readable JSON object\)$"):
        read_json_object(tmp_path / "metrics.json")
