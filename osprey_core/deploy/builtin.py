"""The framework's deployable services: ``osprey.postgresql`` (the shared store of several
workers), ``osprey.api`` (``osprey serve``: the HTTP API and the console) and
``osprey.jupyter`` (a notebook server over the execution folders, read-only).

Their images are built locally by ``osprey deploy build``; secrets (database password,
notebook token) pass through the environment and are never written into a rendered file.
Registered by the ``deploy_services`` plugin. See ``docs/deployment.md``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

from osprey_core.hookspecs.services import HealthCheck, ImageRecipe, Port, ServiceSpec, Volume


class PostgresConfig(BaseModel):
    """osprey.postgresql: the database and role created on first start."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    database: str = Field("osprey", pattern=r"^[a-z_][a-z0-9_]*$")
    user: str = Field("osprey", pattern=r"^[a-z_][a-z0-9_]*$")


POSTGRES_IMAGE = ImageRecipe("osprey-postgresql", """\
FROM {{ base_image }}
RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \\
        --no-install-recommends postgresql-15 && rm -rf /var/lib/apt/lists/* \\
    && mkdir -p /var/lib/postgresql/data && chown postgres:postgres /var/lib/postgresql/data
ENV PATH=/usr/lib/postgresql/15/bin:/usr/bin:/bin
""")

# ``$$`` is a literal ``$`` for compose; the password file lives only until initdb read it.
# UTF8 explicitly: the image has no locales, and initdb would pick SQL_ASCII (whose text
# psycopg returns as bytes).
POSTGRES_TEMPLATE = """\
user: postgres
environment:
  - POSTGRES_PASSWORD
  - PGDATA=/var/lib/postgresql/data/pg
command:
  - /bin/sh
  - -ec
  - |
    if [ ! -s "$$PGDATA/PG_VERSION" ]; then
      : "$${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD in the environment of osprey deploy up}"
      printf '%s' "$$POSTGRES_PASSWORD" > /tmp/pw
      initdb -D "$$PGDATA" -U {{ config.user }} --pwfile=/tmp/pw -A scram-sha-256 \\
        -E UTF8 --locale=C.UTF-8 >/dev/null
      rm -f /tmp/pw
      echo 'host all all all scram-sha-256' >> "$$PGDATA/pg_hba.conf"
      echo 'CREATE DATABASE {{ config.database }}' \\
        | postgres --single -D "$$PGDATA" postgres >/dev/null
    fi
    exec postgres -D "$$PGDATA" -c listen_addresses='*' -k /tmp
"""

# The interpreter keeps its original prefix (its RUNPATH and sys.prefix resolve there; the
# folders above it are made traversable, e.g. /root of a pyenv prefix); its bin/ is linked
# into /usr/local/bin, so templates need no host path. OSPREY_WHEELS names the wheels: a
# new set makes a new layer (podman's cache does not look at what is mounted).
PYTHON_IMAGE = """\
FROM {{ base_image }}
RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \\
        --no-install-recommends libssl3 libsqlite3-0 libffi8 zlib1g libbz2-1.0 liblzma5 \\
        libreadline8 libncursesw6 libuuid1 libgdbm6 ca-certificates \\
    && rm -rf /var/lib/apt/lists/*
ENV OSPREY_WHEELS={{ wheels_id }}
RUN mkdir -p {{ python_prefix }} && cp -a /opt/osprey-python-src/. {{ python_prefix }}/ \\
    && {{ python }} -m pip install --quiet --no-index --find-links /opt/osprey-wheels \\
        {{ python_packages }} \\
    && ln -sf {{ python_prefix }}/bin/* /usr/local/bin/ \\
    && p={{ python_prefix }} && while [ "$p" != / ]; do chmod o+x "$p"; p=$(dirname "$p"); done \\
    && mkdir -p /data && chown 65534:65534 /data
"""

API_TEMPLATE = """\
user: "65534:65534"
environment:
  - OSPREY_HOME=/data
  - OSPREY__SERVICE__HOST=0.0.0.0
  - OSPREY__SERVICE__PORT=8750
{%- if "osprey.postgresql" in services %}
{%- set server = services["osprey.postgresql"] ~ ":5432" %}
  - OSPREY__STORE__URL=postgresql://{{ config.database_user }}@{{ server }}/{{ config.database }}
  - PGPASSWORD=${POSTGRES_PASSWORD}
{%- endif %}
{%- for key, value in config.environment.items() %}
  - {{ (key ~ "=" ~ value) | tojson }}
{%- endfor %}
{%- if config.config_file %}
  - OSPREY_CONFIG=/etc/osprey/osprey.yml
volumes:
  - {{ (config.config_file ~ ":/etc/osprey/osprey.yml:ro") | tojson }}
{%- endif %}
command: ["python3", "-m", "osprey_core", "serve", "--json-logs"]
"""

JUPYTER_TEMPLATE = """\
user: "65534:65534"
environment:
  - HOME=/tmp
  - JUPYTER_TOKEN
working_dir: /executions
command: ["python3", "-m", "jupyter", "lab", "--ip=0.0.0.0", "--port=8888", "--no-browser",
          "--ServerApp.root_dir=/executions"]
"""


class ApiConfig(BaseModel):
    """osprey.api: osprey serve in a container (its home is a project volume)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    database: str = Field("osprey", pattern=r"^[a-z_][a-z0-9_]*$",
                          description="Database used when osprey.postgresql is deployed.")
    database_user: str = Field("osprey", pattern=r"^[a-z_][a-z0-9_]*$")
    config_file: Path | None = Field(None, description="An osprey.yml for the service "
                                     "(absolute path; mounted read-only).")
    environment: dict[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")], str] = Field(
        default_factory=dict, description=(
        "Extra environment, e.g. OSPREY__CONTROL_SYSTEM__WRITES_ENABLED: 'true' "
        "(never secrets: they would be written into the compose file)."))

    @field_validator("config_file")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_absolute():
            raise ValueError("must be an absolute path (it is mounted into the container)")
        return value


def register_builtin_services(register: Callable[[ServiceSpec], None]) -> None:
    """Register the three built-in services."""
    register(ServiceSpec(
        name="osprey.postgresql",
        description="PostgreSQL 15: the store several osprey workers share.",
        template=POSTGRES_TEMPLATE, config_model=PostgresConfig,
        ports=(Port("postgresql", 5432, 5432),),
        volumes=(Volume("/var/lib/postgresql/data", name="pgdata"),),
        healthcheck=HealthCheck(("pg_isready", "-q", "-h", "127.0.0.1")),
        image=POSTGRES_IMAGE))
    register(ServiceSpec(
        name="osprey.api",
        description="osprey serve: the HTTP API, the web console and the chat endpoint.",
        template=API_TEMPLATE, config_model=ApiConfig, ports=(Port("http", 8750, 8750),),
        after=("osprey.postgresql",),
        volumes=(Volume("/data", name="api-home"),),
        healthcheck=HealthCheck(("python3", "-c", "import urllib.request; urllib.request."
                                 "urlopen('http://127.0.0.1:8750/healthz', timeout=5)")),
        image=ImageRecipe("osprey-api", PYTHON_IMAGE,
                          python_packages=("osprey-core[serve,postgres]",))))
    register(ServiceSpec(
        name="osprey.jupyter",
        description="JupyterLab over the execution folders (read-only).",
        template=JUPYTER_TEMPLATE, ports=(Port("http", 8888, 8888),),
        volumes=(Volume("/executions", source="{{ home }}/executions", read_only=True),),
        healthcheck=HealthCheck(("python3", "-c", "import urllib.request; urllib.request."
                                 "urlopen('http://127.0.0.1:8888/api', timeout=5)")),
        image=ImageRecipe("osprey-jupyter", PYTHON_IMAGE, python_packages=("jupyterlab",))))
