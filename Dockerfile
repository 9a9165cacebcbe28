FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY tuneloop ./tuneloop
COPY proxy ./proxy
COPY storage ./storage
COPY curation_ui ./curation_ui
COPY exporter ./exporter
# psycopg[binary,pool] (the Postgres store) comes as a wheel with its own libpq: no apt step
RUN pip install --no-cache-dir .
ENV LITELLM_LOCAL_MODEL_COST_MAP=True
EXPOSE 4000 8501
CMD ["tuneloop", "serve", "--host", "0.0.0.0", "--port", "4000", "--db", "/data/tuneloop.duckdb"]
