# GPU image: CUDA PyTorch base (torch 2.11 / torchvision 0.26), AICore installed with pip.
FROM pytorch/pytorch:2.11.0-cuda12.8-cudnn9-runtime

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY aicore ./aicore
RUN pip install .
COPY main.py ./
COPY configs ./configs
COPY custom_modules ./custom_modules

ENTRYPOINT ["python", "main.py"]
CMD ["--help"]
