"""hsynex: H-SynEx hypothalamic-subunit segmentation for MRI of any contrast and resolution."""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent


def requirements() -> list[str]:
    lines = (HERE / "requirements.txt").read_text().splitlines()
    return [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()]


setup(
    name="mri_hsynex",
    version="0.1.0",
    description="Hypothalamic subunit segmentation on MRI of any contrast and resolution "
                "(H-SynEx, synthetic training, FreeSurfer-style outputs)",
    long_description=(HERE / "README.md").read_text(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["mri_hsynex", "mri_hsynex.*"]),
    package_data={"mri_hsynex": ["data/*"]},
    # The shipped networks live in models/ at the top level; they are installed next to the
    # package data so that a non-editable install finds them too.
    data_files=[("share/mri_hsynex/models", [str(p) for p in sorted((HERE / "models").glob("*"))
                                             if p.is_file()])],
    install_requires=requirements(),
    entry_points={"console_scripts": ["mri_hsynex = mri_hsynex.cli.main:main"]},
    scripts=["freesurfer_wrappers/mri_segment_hypothalamus_synex"],
)
