# Training image (GPU): the CUDA PyTorch base with the torch pair AICore is verified with on
# GPU (torch 2.11 / torchvision 0.26; pyproject.toml allows 2.11-2.14), AICore installed from
# this folder as a regular (non-editable) package, run as a non-root user.
#
#   docker build -t aicore .
#   docker run --gpus all --rm --user $(id -u):$(id -g) -v $PWD/data:/app/data \
#       -v $PWD/runs:/app/runs aicore -c configs/classification/quickstart.json
FROM pytorch/pytorch:2.11.0-cuda12.8-cudnn9-runtime

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    NO_ALBUMENTATIONS_UPDATE=1 MPLCONFIGDIR=/tmp/matplotlib
WORKDIR /app

# 1) dependencies only, from pyproject.toml: this layer is rebuilt when the dependency list
#    changes, not when the code does. torch/torchvision already in the base satisfy the pins.
COPY pyproject.toml ./
RUN python -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; open('/tmp/requirements.txt', 'w').write('\n'.join(deps))" \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# 2) the code: a plain install that carries the shipped configs (aicore/configs)
COPY setup.py README.md ./
COPY aicore ./aicore
COPY configs ./configs
RUN pip install --no-deps . && rm -rf build *.egg-info
COPY main.py ./
COPY custom_modules ./custom_modules

# 3) a non-root user; /app/data and /app/runs are where volumes are mounted
RUN useradd --create-home --uid 1000 aicore && mkdir -p /app/data /app/runs \
    && chown -R aicore:aicore /app/data /app/runs
USER aicore

# `python main.py -c ...` as before; `docker run --entrypoint aicore aicore train -c
# classification/quickstart` for the console command
ENTRYPOINT ["python", "main.py"]
CMD ["--help"]
