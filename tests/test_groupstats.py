"""Group comparisons on a stats table (mri_hsynex.cohort.groupstats, `mri_hsynex groupstats`)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mri_hsynex.cli import groupstats as cli
from mri_hsynex.cohort import groupstats as gs
from mri_hsynex.errors import HsynexError
from mri_hsynex.labels import ALL_OUTPUT_ROWS

STRUCTS = [row.name for row in ALL_OUTPUT_ROWS]


def make_cohort(n: int = 12, effect: float = 0.85, seed: int = 0):
    """A table (subject x 13 structures + eTIV) and groups/covariates; group 'pat' has
    volumes ``effect`` times those of 'ctl' at the same head size."""
    rng = np.random.default_rng(seed)
    subjects = [f"sub-{i:02d}" for i in range(2 * n)]
    group = np.array(["ctl"] * n + ["pat"] * n)
    etiv = rng.normal(1.5e6, 1.2e5, 2 * n)
    age = rng.uniform(20, 80, 2 * n)
    sex = rng.choice(["F", "M"], 2 * n)
    base = 40 + 60 * rng.random(len(STRUCTS))
    vols = (base[None, :] * (etiv[:, None] / 1.5e6) * (1 - 0.002 * (age[:, None] - 50))
            * np.where(group == "pat", effect, 1.0)[:, None]
            * rng.normal(1, 0.03, (2 * n, len(STRUCTS))))
    table = pd.DataFrame(vols, index=pd.Index(subjects, name="Measure:volume"),
                         columns=STRUCTS)
    table[gs.ETIV_COLUMN] = etiv
    groups = pd.DataFrame({"subject": subjects, "group": group, "age": age.round(1), "sex": sex})
    return table, groups


def write_inputs(tmp_path, table, groups, sep="\t", gsep=","):
    tpath, gpath = tmp_path / "table.txt", tmp_path / "groups.csv"
    table.to_csv(tpath, sep=sep)
    groups.to_csv(gpath, sep=gsep, index=False)
    return tpath, gpath


def test_read_table_delimiters_and_transpose(tmp_path):
    table, _ = make_cohort(3)
    for sep in ("\t", ",", ";"):
        table.to_csv(tmp_path / "t.txt", sep=sep)
        read = gs.read_table(tmp_path / "t.txt")
        assert list(read.index) == list(table.index)
        np.testing.assert_allclose(read.to_numpy(), table.to_numpy())
    table.T.rename_axis("Measure:volume").to_csv(tmp_path / "tt.txt", sep="\t")
    read = gs.read_table(tmp_path / "tt.txt")
    assert list(read.columns) == list(table.columns)
    np.testing.assert_allclose(read.to_numpy(), table.to_numpy())
    (tmp_path / "bad.txt").write_text("a\tb\n1\t2\n")
    with pytest.raises(HsynexError, match="Measure"):
        gs.read_table(tmp_path / "bad.txt")


def test_statistics_match_the_libraries(tmp_path):
    from scipy.stats import mannwhitneyu
    from sklearn.metrics import roc_auc_score
    from statsmodels.stats.multitest import multipletests

    table, groups = make_cohort()
    comp = gs.compare_groups(table, gs.read_groups(write_inputs(tmp_path, table, groups)[1]),
                             adjust="none")
    res = comp.results.set_index("structure")
    assert comp.groups == ("ctl", "pat") and list(res.index) == STRUCTS
    s = STRUCTS[3]
    a, b = table[s].iloc[:12].to_numpy(), table[s].iloc[12:].to_numpy()
    assert res.loc[s, "mean_A"] == pytest.approx(a.mean())
    assert res.loc[s, "sd_B"] == pytest.approx(b.std(ddof=1))
    assert res.loc[s, "p_ranksum"] == pytest.approx(mannwhitneyu(b, a).pvalue)
    pooled = np.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2)
    assert res.loc[s, "cohen_d"] == pytest.approx((b.mean() - a.mean()) / pooled)
    assert res.loc[s, "auroc"] == pytest.approx(roc_auc_score([0] * 12 + [1] * 12,
                                                              np.r_[a, b]))
    np.testing.assert_allclose(res["p_ranksum_fdr"],
                               multipletests(res["p_ranksum"], method="fdr_bh")[1])
    # a 15% smaller group: negative d, AUROC below one half, significant after FDR
    assert (res["cohen_d"] < 0).all() and (res["auroc"] < 0.5).all()
    assert (res["p_ranksum_fdr"] < 0.05).all()


def test_residual_adjustment_removes_head_size():
    rng = np.random.default_rng(1)
    etiv = pd.Series(rng.normal(1.5e6, 1e5, 10))
    vols = pd.DataFrame({"x": 20 + 4e-5 * etiv})  # exactly linear in eTIV
    ref = pd.Series([True] * 5 + [False] * 5)
    adj = gs.adjust_for_etiv(vols, etiv, ref, "residual")
    np.testing.assert_allclose(adj["x"], 20 + 4e-5 * etiv.mean())
    np.testing.assert_allclose(gs.adjust_for_etiv(vols, etiv, ref, "ratio")["x"],
                               vols["x"] / etiv)
    assert gs.adjust_for_etiv(vols, etiv, ref, "none").equals(vols)


def test_residual_adjustment_helps_when_heads_differ(tmp_path):
    # patients have bigger heads but the same volume at equal head size: raw volumes differ,
    # adjusted volumes do not
    table, groups = make_cohort(n=15, effect=1.0, seed=3)
    pat = groups["group"].to_numpy() == "pat"
    table.loc[pat, gs.ETIV_COLUMN] *= 1.25
    table.loc[pat, STRUCTS] *= 1.25
    g = gs.read_groups(write_inputs(tmp_path, table, groups)[1])
    raw = gs.compare_groups(table, g, adjust="none").results
    adj = gs.compare_groups(table, g, adjust="residual").results
    assert raw["p_ranksum"].max() < 0.01 and raw["cohen_d"].min() > 2
    assert adj["cohen_d"].abs().mean() < 0.3 * raw["cohen_d"].mean()
    assert (adj["p_ranksum_fdr"] > 0.05).all()


def test_covariates_ols(tmp_path):
    table, groups = make_cohort(n=20, effect=0.9, seed=2)
    g = gs.read_groups(write_inputs(tmp_path, table, groups)[1])
    assert pd.api.types.is_numeric_dtype(g["age"]) and not pd.api.types.is_numeric_dtype(g["sex"])
    comp = gs.compare_groups(table, g, covariates=["age", "sex"])
    res = comp.results.set_index("structure")
    for s in STRUCTS:  # the group coefficient is about -10% of the control mean
        assert res.loc[s, "ols_beta"] == pytest.approx(-0.1 * res.loc[s, "mean_A"], rel=0.35)
    assert (res["ols_p_fdr"] < 0.05).all() and (res["ols_n"] == 40).all()
    with pytest.raises(HsynexError, match="covariates not in the groups file: weight"):
        gs.compare_groups(table, g, covariates=["weight"])


def test_reference_group_flips_direction(tmp_path):
    table, groups = make_cohort()
    g = gs.read_groups(write_inputs(tmp_path, table, groups)[1])
    flipped = gs.compare_groups(table, g, reference="pat").results
    assert (flipped["group_A"] == "pat").all() and (flipped["cohen_d"] > 0).all()
    with pytest.raises(HsynexError, match="reference group"):
        gs.compare_groups(table, g, reference="nobody")


def test_needs_two_groups(tmp_path):
    table, groups = make_cohort(4)
    one = groups.assign(group="ctl")
    with pytest.raises(HsynexError, match="exactly two groups.*has 1: ctl"):
        gs.compare_groups(table, gs.read_groups(write_inputs(tmp_path, table, one)[1]))
    three = groups.copy()
    three.loc[0, "group"] = "mci"
    with pytest.raises(HsynexError, match="has 3: ctl, mci, pat|has 3: mci, ctl, pat"):
        gs.compare_groups(table, gs.read_groups(write_inputs(tmp_path, table, three)[1]))
    tiny = groups.iloc[:5]  # the first five subjects are all "ctl": a single group
    with pytest.raises(HsynexError):
        gs.compare_groups(table, gs.read_groups(write_inputs(tmp_path, table, tiny)[1]))
    nogroup = groups.drop(columns="group")
    with pytest.raises(HsynexError, match="'group' column"):
        gs.read_groups(write_inputs(tmp_path, table, nogroup)[1])


def test_missing_subjects_are_named_and_outputs_written(tmp_path):
    table, groups = make_cohort(6)
    groups = pd.concat([groups.drop(index=[0]),
                        pd.DataFrame({"subject": ["sub-ghost"], "group": ["pat"], "age": [50],
                                      "sex": ["F"]})])
    tpath, gpath = write_inputs(tmp_path, table, groups, sep=",", gsep="\t")
    warnings = []
    comp, paths = gs.run_groupstats(tpath, gpath, tmp_path / "out", warn=warnings.append)
    assert comp.only_in_table == ["sub-00"] and comp.only_in_groups == ["sub-ghost"]
    assert any("sub-00" in w and "not in the groups file" in w for w in warnings)
    assert any("sub-ghost" in w and "not in the table" in w for w in warnings)
    res = pd.read_csv(paths["results"], sep="\t")
    assert list(res["structure"]) == STRUCTS and (res["n_A"] == 5).all()
    adjusted = pd.read_csv(paths["adjusted"], sep="\t", index_col=0)
    assert "sub-00" not in adjusted.index and list(adjusted.columns[:1]) == ["group"]
    assert paths["figure"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]


def test_no_etiv_needs_adjust_none(tmp_path):
    table, groups = make_cohort(4)
    table = table.drop(columns=gs.ETIV_COLUMN)
    g = gs.read_groups(write_inputs(tmp_path, table, groups)[1])
    with pytest.raises(HsynexError, match="adjust none"):
        gs.compare_groups(table, g)
    res = gs.compare_groups(table, g, adjust="none").results
    assert "adj_mean_A" not in res.columns and len(res) == len(STRUCTS)


def test_cli(tmp_path, capsys):
    table, groups = make_cohort(6)
    tpath, gpath = write_inputs(tmp_path, table, groups)
    assert cli.main([]) == 1
    assert cli.main(["--table", str(tpath), "--groups", str(gpath),
                     "--covariates", "age,sex", "--o", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert "pat (n=6) vs ctl (n=6)" in out and "Hypothalamus-Whole" in out
    assert (tmp_path / "o" / "groupstats.tsv").is_file()
    assert "ols_p_fdr" in (tmp_path / "o" / "groupstats.tsv").read_text().splitlines()[0]
    # the default output folder is the table's
    assert cli.main(["--table", str(tpath), "--groups", str(gpath)]) == 0
    assert (tmp_path / "groupstats.png").is_file()
    assert cli.main(["--table", str(tmp_path / "missing.txt"), "--groups", str(gpath)]) == 1
    assert capsys.readouterr().err.startswith("ERROR: cannot read")
