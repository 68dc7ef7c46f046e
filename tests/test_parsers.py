import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datasets.errors import DatasetError, FormatError
from datasets.parse import build_tables, parse_raw
from datasets.parsers import asen, darn, deepfashion, fashionai
from datasets.schemas import LabelsSchema, TaxonomySchema
from tests.fixtures_data import write_asen_folder, write_deepfashion, write_fashionai_zip

REAL = "/work/shared/real"


def _extract_img(root):
    import zipfile

    with zipfile.ZipFile(root / "Img" / "img.zip") as zf:
        zf.extractall(root)


@pytest.mark.parametrize("anno", ["Anno", "Anno_coarse"])
def test_deepfashion_bom_crlf_spaces_and_bad_line(tmp_path, anno):
    info = write_deepfashion(tmp_path, anno=anno)
    _extract_img(tmp_path)
    res = deepfashion.parse(tmp_path)
    assert res.paths == info["names"]  # names with spaces kept whole
    assert [(q.file, q.line, q.check) for q in res.quarantine] == [(f"{anno}/list_attr_img.txt", info["bad_line"], "bad_columns")]
    t = build_tables(res, tmp_path)
    tax = TaxonomySchema.validate(t["taxonomy"])
    assert tax.filter(pl.col("global_class_id") == 1)["class_name"].item() == "a line"
    assert tax["attribute"].unique().len() == 5
    lab = LabelsSchema.validate(t["labels"])
    assert lab.filter(pl.col("state") == "unknown").height == 1
    assert lab.filter(pl.col("state") == "positive").height == len(info["names"])
    # image 1 is positive for global class 1 ('a line', type 3 -> attribute 2, class 0)
    assert lab.filter(pl.col("image_id") == 1).select("attribute_id", "class_id").row(0) == (2, 0)
    assert t["partition"].height == len(info["names"])
    img = t["images"]
    assert img.filter(pl.col("image_id") == 0)["width"].item() == 64
    assert img.filter(pl.col("image_id") == 3)["width"].item() is None  # corrupt
    assert img.filter(pl.col("image_id") == 5)["sha256"].item() is None  # missing


def test_deepfashion_not_that_format_names_file_and_line(tmp_path):
    write_deepfashion(tmp_path)
    (tmp_path / "Anno" / "list_attr_img.txt").write_text("2\nheader\nfoo,bar,baz\nqux,1,2\n")
    with pytest.raises(FormatError) as e:
        deepfashion.parse(tmp_path)
    assert e.value.line == 3 and e.value.path.endswith("list_attr_img.txt")
    assert "values in {1,-1,0}" in str(e.value)
    (tmp_path / "Anno" / "list_attr_img.txt").write_text("twelve\nheader\n")
    with pytest.raises(FormatError, match=r"list_attr_img.txt:1: expected the number of entries"):
        deepfashion.parse(tmp_path)


def test_fashionai_label_csv(tmp_path):
    import zipfile

    write_fashionai_zip(tmp_path / "fa.zip")
    zipfile.ZipFile(tmp_path / "fa.zip").extractall(tmp_path / "raw")
    res = fashionai.parse(tmp_path / "raw")
    assert res.paths[0] == "fashionAI_attributes_train1/Images/skirt_length_labels/img 000.jpg"
    lab = pl.DataFrame(res.labels, schema=["image_id", "attribute_id", "class_id", "state"], orient="row")
    assert lab.filter(pl.col("state") == "maybe")["image_id"].to_list() == [2]
    assert lab.filter(pl.col("image_id") == 3).height == 0  # no y, no m: nothing explicit
    assert res.quarantine == []


def test_fashionai_real_valid_labels():
    res, root = fashionai.parse_file(f"{REAL}/fashionai/valid_label.csv")
    assert len(res.paths) == 18000
    lab = pl.DataFrame(res.labels, schema=["image_id", "attribute_id", "class_id", "state"], orient="row")
    assert lab.filter(pl.col("state") == "positive").height == 18000
    assert lab.filter(pl.col("state") == "maybe")["image_id"].n_unique() == 970


@pytest.mark.parametrize("name,key,queries,candidates", [
    ("FashionAI", "fashionai", 3600, 14400), ("DARN", "darn", 4293, 17168), ("DeepFashion", "deepfashion", 5525, 22100)])
def test_asen_real_split_files_import(name, key, queries, candidates):
    res = parse_raw(key, f"{REAL}/asen_splits/{name}", "asen")
    t = build_tables(res, None, stats=False)
    roles = t["asen_roles"]
    assert roles.filter(pl.col("role") == "query").height == queries
    assert roles.filter(pl.col("role") == "candidate").height == candidates
    assert set(t["partition"]["partition"].unique()) == {"val"}
    # the real DeepFashion valid split names one image on two lines: counted, both indices kept
    dup = [(q.file, q.line, q.check) for q in res.quarantine]
    assert dup == ([("filenames_valid.txt", 17038, "duplicate_index")] if key == "deepfashion" else [])
    # every label's class is inside the taxonomy
    tax = set(t["taxonomy"].select("attribute_id", "class_id").iter_rows())
    assert set(t["labels"].select("attribute_id", "class_id").iter_rows()) <= tax
    if key == "deepfashion":
        assert t["taxonomy"].height == 1000  # the trailing-tab label file covers all classes
        assert t["taxonomy"]["global_class_id"].max() == 999


def test_asen_folder_roles_and_partitions(tmp_path):
    write_asen_folder(tmp_path, with_images=False)
    res = asen.parse(tmp_path, "darn")
    t = build_tables(res, None, stats=False)
    assert t["partition"]["partition"].value_counts().sort("partition").rows() == [("train", 6), ("val", 10)]
    assert t["asen_roles"].filter(pl.col("role") == "train").height == 12  # 6 images x 2 attributes
    assert res.paths[0] == "pic/100/t 0.jpg"


def test_asen_bad_index_is_quarantined(tmp_path):
    write_asen_folder(tmp_path, with_images=False)
    with open(tmp_path / "candidate_valid.txt", "a") as f:
        f.write("999 0 1\n")
    res = asen.parse(tmp_path, "darn")
    assert [(q.file, q.line, q.check) for q in res.quarantine] == [("candidate_valid.txt", 9, "unknown_index")]


def test_darn_urls_malformed_line(tmp_path):
    p = tmp_path / "urls.txt"
    p.write_text("pic/1/a.jpg pic/1/a.jpg\njustoneword\n")
    with pytest.raises(FormatError) as e:
        darn.parse_urls(p)
    assert e.value.line == 2 and "<relative image path> <url>" in str(e.value)


def test_bad_encoding_names_line(tmp_path):
    p = tmp_path / "label.csv"
    p.write_bytes(b"Images/a/x.jpg,skirt_length_labels,nnynnn\nImages/\xff\xfe.jpg,skirt_length_labels,nnynnn\n")
    with pytest.raises(FormatError) as e:
        fashionai.parse_file(p)
    assert e.value.line == 2 and "UTF-8" in str(e.value)


# --- fuzzing: random bytes, truncated lines, wrong column counts, bad encodings

_lines = st.lists(st.one_of(
    st.text(max_size=40),
    st.sampled_from(["img/a b/c.jpg 1 -1 0 1 -1 1", "img/x.jpg 1", "0 1 2", "3\t1\t5\t\t\t", "Images/x.jpg,neck_design_labels,nnnny",
                     "Images/x.jpg,neck_design_labels,nn", "6", "header", "\ufeff", "pic/1.jpg http://x/1.jpg"]),
), max_size=8)


def _bytes_strategy():
    return st.one_of(st.binary(max_size=200), _lines.map(lambda ls: "\n".join(ls).encode("utf-8", "surrogatepass")),
                     _lines.map(lambda ls: "\r\n".join(ls).encode("utf-16", "surrogatepass")))


def _only_project_errors(fn):
    try:
        fn()
    except DatasetError:
        pass


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=_bytes_strategy(), which=st.sampled_from(["cloth", "img", "part", "fashionai", "asen_names", "asen_pairs",
                                                     "asen_many", "urls", "meta", "df_tree", "asen_tree"]))
def test_fuzz_parsers_raise_only_project_errors(tmp_path, data, which):
    p = tmp_path / "f.txt"
    p.write_bytes(data)
    from datasets.parsers import ParseResult

    calls = {
        "cloth": lambda: deepfashion.parse_attr_cloth(p),
        "img": lambda: deepfashion.parse_attr_img(p, 6, ParseResult(), [(0, i) for i in range(6)], "f.txt"),
        "part": lambda: deepfashion.parse_partition(p, ParseResult(), set(), "f.txt"),
        "fashionai": lambda: fashionai.parse_file(p),
        "asen_names": lambda: asen.parse_filenames(p),
        "asen_pairs": lambda: asen.parse_pairs_file(p, "one"),
        "asen_many": lambda: asen.parse_pairs_file(p, "many"),
        "urls": lambda: darn.parse_urls(p),
        "meta": lambda: asen.parse_meta(p, "darn"),
    }
    if which in calls:
        _only_project_errors(calls[which])
        return
    # whole-folder parses with one file replaced by the fuzz input
    root = tmp_path / which
    if not root.exists():
        if which == "df_tree":
            write_deepfashion(root)
        else:
            write_asen_folder(root, with_images=False)
    target = root / ("Anno/list_attr_img.txt" if which == "df_tree" else "query_valid.txt")
    target.write_bytes(data)
    _only_project_errors(lambda: parse_raw("deepfashion" if which == "df_tree" else "darn", root))
