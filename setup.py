"""Ships the repository's data files inside the wheel (everything else is in pyproject.toml).

The migrations, the JSON Schema, the default price overrides, the dashboards and the demo config live at
the repository root, where operators, Docker Compose and reviewers find them. A wheel must work without the
repository, so ``build_py`` copies them into the package as ``aimeter/_data/<same relative path>``;
:mod:`aimeter.resources` reads that copy when it exists and the repository otherwise (an editable install).
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
# Relative to the repository root; each is copied whole (directories) or as is (files).
DATA = ("schemas", "dashboards/json", "dashboards/provisioning", "examples/demo.yaml")


class BuildWithData(build_py):
    def run(self) -> None:
        super().run()
        target = Path(self.build_lib) / "aimeter" / "_data"
        for name in DATA:
            source, copy = ROOT / name, target / name
            copy.parent.mkdir(parents=True, exist_ok=True)
            if source.is_dir():
                shutil.copytree(source, copy, dirs_exist_ok=True)
            else:
                shutil.copy2(source, copy)


setup(cmdclass={"build_py": BuildWithData})
