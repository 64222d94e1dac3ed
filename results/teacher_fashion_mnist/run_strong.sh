#!/bin/sh
# The strong teacher's long fit (issue 34): resumes from its last epoch checkpoint when run again.
# Run from the repository root; one thread, pinned to core 1, so that a resumed fit ends with the weights of an
# uninterrupted one (the reductions' order depends on the thread count). Appends to fit_strong.log.
cd "$(dirname "$0")/../.." || exit 1
OMP_NUM_THREADS=1 PYTHONPATH="$PWD" nohup nice -n 19 taskset -c 1 "${PYTHON:-/work/main/.venv/bin/python}" -m latentdd \
  fit-teacher --dataset fashion_mnist --validation 0.1 --teacher-preset strong --cache-dir ~/.cache/latentdd \
  >> results/teacher_fashion_mnist/fit_strong.log 2>&1 &
echo $! > /tmp/teacher_strong.pid
