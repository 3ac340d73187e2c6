# The seckill image: one image for the front door, the workers and one-shot commands.
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY seckill ./seckill
COPY workers ./workers
COPY lua ./lua
COPY migrations ./migrations
RUN pip install .
USER nobody
EXPOSE 8080
CMD ["seckill", "up", "--demo"]
