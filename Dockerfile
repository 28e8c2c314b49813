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
ARG TF_VERSION=2.21.0
FROM tensorflow/tensorflow:${TF_VERSION}-gpu

WORKDIR /app
# Dependencies first (from pyproject.toml; the base image's TensorFlow already satisfies its pin),
# so editing the code does not reinstall them.
COPY pyproject.toml README.md ./
COPY bionn ./bionn
RUN python3 -m pip install --no-cache-dir . \
    && python3 -c "import bionn.train, bionn.report"
COPY train.py ./
COPY conf ./conf

# Hydra resolves conf/ beside train.py, so the working folder can be the results mount.
# BIONN_CONFIG_DIR: bionn-generate's dataset names; the caches must be writable by any --user.
ENV BIONN_CONFIG_DIR=/app/conf \
    BIONN_CACHE_DIR=/results/.cache \
    NUMBA_CACHE_DIR=/tmp/numba-cache \
    MPLCONFIGDIR=/tmp/matplotlib \
    KERAS_HOME=/tmp/keras \
    PYTHONUNBUFFERED=1
WORKDIR /results
VOLUME ["/results"]
ENTRYPOINT ["python3", "/app/train.py"]
CMD []
