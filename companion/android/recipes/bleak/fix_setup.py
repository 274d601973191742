from setuptools import find_packages, setup

setup(
    name="bleak",
    version="[VERSION]",  # filled in by the recipe
    packages=find_packages(exclude=("tests", "examples", "docs")),
    package_data={"bleak.backends.p4android": ["java/com/github/hbldh/bleak/*.java"]},
)
