"""python-for-android recipe for bleak, pinned to one release (bleak's own recipe follows its develop branch).

Based on bleak's recipe (bleak/backends/p4android/recipes/bleak in the bleak repository): the same
build, but from the tagged release's source archive, so every APK build gets the same bleak as the
desktop app's ``bleak>=3.1`` resolves to here (3.1.0). Bump ``version`` together with the desktop pin.
"""

import os
from os.path import join

import sh
from pythonforandroid.recipe import PythonRecipe
from pythonforandroid.toolchain import info, shprint


class BleakRecipe(PythonRecipe):
    version = "3.1.0"
    url = "https://github.com/hbldh/bleak/archive/refs/tags/v{version}.tar.gz"
    name = "bleak"
    depends = ["pyjnius"]  # noqa: RUF012 - p4a reads this class attribute
    call_hostpython_via_targetpython = False
    fix_setup_filename = "fix_setup.py"

    def prepare_build_dir(self, arch):
        super().prepare_build_dir(arch)
        build_dir = self.get_build_dir(arch)
        setup_py_path = join(build_dir, "setup.py")
        if not os.path.exists(setup_py_path):  # bleak builds with uv_build; p4a wants a setup.py
            with open(join(self.get_recipe_dir(), self.fix_setup_filename)) as f:
                contents = f.read()
            with open(setup_py_path, "w") as f:
                f.write(contents.replace("[VERSION]", self.version))

    def get_recipe_env(self, arch=None, with_flags_in_cc=True):
        env = super().get_recipe_env(arch, with_flags_in_cc)
        env["PYJNIUS_PACKAGES"] = self.ctx.get_site_packages_dir(arch)
        return env

    def postbuild_arch(self, arch):
        super().postbuild_arch(arch)
        info("Copying bleak's Java callbacks")
        path = join(self.get_build_dir(arch.arch), "bleak", "backends", "p4android", "java", ".")
        shprint(sh.cp, "-a", path, self.ctx.javaclass_dir)


recipe = BleakRecipe()
