# bionn on the official TensorFlow GPU image of the version pyproject.toml pins (CUDA and cuDNN
# come with it; on a machine without a GPU the same image trains on the CPU).
#
#   docker build -t bionn .
#   docker run --rm --gpus all -v "$PWD/results:/results" bionn                      # python train.py
#   docker run --rm --gpus all -v "$PWD/results:/results" bionn model=P training.epochs=5
#   docker run --rm --gpus all -v "$PWD/results:/results" bionn -m model=A,E,P,P2    # a sweep
#
# Arguments are Hydra overrides. Run folders, sweep reports and the statistics cache go to the
# mounted /results (outputs/, multirun/, .cache/); add --user "$(id -u):$(id -g)" to own them.
# The test suite builds and runs this file unchanged on a stand-in base (docs/containers.md).
ARG TF_VERSION=2.21.0
ARG BASE_IMAGE=tensorflow/tensorflow:${TF_VERSION}-gpu
FROM ${BASE_IMAGE}

WORKDIR /app
# Dependencies first, from pyproject.toml and requirements.lock alone: editing the code or the README
# reuses this layer. The lock is a constraints file: pyproject.toml's dependencies, and theirs, at
# exactly the versions the test suite ran with (its test-only rows are not installed); the base
# image's own TensorFlow stays where it is the locked version. The pip cache is a build cache.
COPY pyproject.toml requirements.lock ./
RUN --mount=type=cache,target=/root/.cache/pip \
    python3 -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies'], sep='\n')" \
        > /tmp/requirements.txt \
    && python3 -m pip install -r /tmp/requirements.txt -c requirements.lock \
    && rm /tmp/requirements.txt
COPY README.md ./
COPY bionn ./bionn
COPY hydra_plugins ./hydra_plugins
# Installed, then the copies removed: one bionn in the image, so a run of train.py (which puts /app
# on sys.path) and a sweep job (which does not) import the same files and share one Numba cache.
RUN python3 -m pip install --no-cache-dir --no-deps . \
    && rm -rf build ./*.egg-info bionn hydra_plugins \
    && python3 -c "import bionn.train, bionn.report, hydra_plugins.bionn_launcher.launcher"
COPY train.py ./
COPY conf ./conf
# The data engine's Numba kernels, compiled once into the image's cache (bionn.data.dataset.compile_kernels,
# as scripts/setup.sh does on a host); any --user may add to it. On another CPU they compile again.
RUN NUMBA_CACHE_DIR=/tmp/numba-cache python3 -c "from bionn.config.compose import compose_run; \
from bionn.data.dataset import compile_kernels; compile_kernels(compose_run(conf='/app/conf').dataset)" \
    && chmod -R a+rwX /tmp/numba-cache
COPY scripts/container/entrypoint.sh ./

# Hydra resolves conf/ beside train.py, so the working folder can be the results mount.
# BIONN_CONFIG_DIR: bionn-generate's dataset names; the caches must be writable by any --user.
# No VOLUME: an anonymous volume would take run folders that no one mounted (and, with buildah,
# hide a bind mount of /results); entrypoint.sh refuses to run without a mounted, writable /results.
ENV BIONN_CONFIG_DIR=/app/conf \
    BIONN_CACHE_DIR=/results/.cache \
    NUMBA_CACHE_DIR=/tmp/numba-cache \
    MPLCONFIGDIR=/tmp/matplotlib \
    KERAS_HOME=/tmp/keras \
    PYTHONUNBUFFERED=1
WORKDIR /results
ENTRYPOINT ["/app/entrypoint.sh"]
CMD []
