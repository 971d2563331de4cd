"""Installs mmadn. ``configs/``, ``tools/`` and the model index travel inside the package under
``mmadn/.mim`` (linked in an editable install, copied in a wheel), where ``mim train/test mmadn``
and ``_base_ = 'mmadn::...'`` (once ``mmadn`` is imported) find them."""
import os
import os.path as osp
import shutil
import sys

from setuptools import find_packages, setup

HERE = osp.dirname(osp.abspath(__file__))


def read_version():
    scope = {}
    with open(osp.join(HERE, 'mmadn', 'version.py')) as f:
        exec(f.read(), scope)
    return scope['__version__']


def read_requirements(name):
    reqs = []
    with open(osp.join(HERE, 'requirements', name)) as f:
        for line in f:
            line = line.split('#', 1)[0].strip()
            if line and not line.startswith('-'):
                reqs.append(line)
    return reqs


def add_mim_extension():
    """Expose configs/, tools/ and the model index under ``mmadn/.mim/``."""
    editable = any(cmd in sys.argv for cmd in ('develop', 'editable_wheel')) or \
        os.environ.get('PIP_EDITABLE') == '1'
    mim_dir = osp.join(HERE, 'mmadn', '.mim')
    os.makedirs(mim_dir, exist_ok=True)
    for name in ('configs', 'tools', 'model-index.yml', 'metafile.yml'):
        src, dst = osp.join(HERE, name), osp.join(mim_dir, name)
        if osp.islink(dst) or osp.isfile(dst):
            os.remove(dst)
        elif osp.isdir(dst):
            shutil.rmtree(dst)
        if editable:
            os.symlink(osp.relpath(src, mim_dir), dst, target_is_directory=osp.isdir(src))
        elif osp.isdir(src):
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))
        else:
            shutil.copyfile(src, dst)


if __name__ == '__main__':
    add_mim_extension()
    setup(
        name='mmadn',
        version=read_version(),
        description='Adaptive Depth Networks (sub-path specialization) for MMDetection and '
        'MMPretrain',
        long_description=open(osp.join(HERE, 'README.md')).read(),
        long_description_content_type='text/markdown',
        packages=find_packages(exclude=('configs', 'tools', 'tests', 'benchmarks')),
        include_package_data=True,
        package_data={'mmadn': ['.mim/configs/**/*', '.mim/tools/**/*', '.mim/*.yml']},
        python_requires='>=3.8',
        # torch/torchvision/mmcv are left to tools/bootstrap.sh (or the user's own CUDA build)
        install_requires=read_requirements('runtime.txt'),
        extras_require={
            'tests': read_requirements('tests.txt'),
            'analysis': read_requirements('analysis.txt')
        },
        license='Apache License 2.0',
        zip_safe=False)
