#!/bin/sh
# The images' entry point (Dockerfile ENTRYPOINT, apptainer.def %runscript): python train.py in
# /results with the arguments as Hydra overrides. The image itself is read-only to its users, so
# /results must be a folder mounted from the host and writable by the user running the container;
# otherwise the run folders would be lost with the container, or the run would fail half-way.
results=/results
if ! mountpoint -q "$results" || [ ! -w "$results" ]; then
    echo "bionn: $results is not a writable folder mounted from the host (running as user $(id -u):$(id -g))." >&2
    echo "bionn: mount one, e.g. docker run -v \"\$PWD/results:/results\" --user \"\$(id -u):\$(id -g)\" ..." >&2
    echo "bionn:              or apptainer run --bind \"\$PWD/results:/results\" ..." >&2
    exit 2
fi
cd "$results" && exec python3 /app/train.py "$@"
