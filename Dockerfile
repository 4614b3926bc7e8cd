# dynomite-py: one node and its redis-server in one image (issue 16).
#
#   docker build -t dynomite-py .
#   docker run -p 8102:8102 -p 22222:22222 dynomite-py
#
# By default the entry script starts redis-server on 127.0.0.1:22122 beside
# the node and stops it after the node (a single-node cluster from
# deploy/docker/dynomite.yml). Mount your own YAML on
# /etc/dynomite/dynomite.yml for a cluster member. In Kubernetes
# (deploy/kubernetes/) redis-server runs from this same image as a sidecar
# container and DYNOMITE_LOCAL_REDIS=0 turns the local one off.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 dynomite \
 && useradd --system --uid 10001 --gid dynomite --home-dir /var/lib/dynomite --shell /usr/sbin/nologin dynomite \
 && install -d -o dynomite -g dynomite -m 0750 /etc/dynomite /var/lib/dynomite /var/lib/dynomite/redis

COPY setup.cfg pyproject.toml README.md /src/
COPY dynomite /src/dynomite
COPY twisted /src/twisted
# Twisted's plugin cache is written now, as root: twistd cannot write it later.
RUN pip install /src \
 && python -c "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))" \
 && rm -rf /src

COPY deploy/docker/entrypoint.sh /usr/local/bin/dynomite-entrypoint
COPY deploy/docker/render-config.sh /usr/local/bin/dynomite-render-config
COPY deploy/docker/dynomite.yml /etc/dynomite/dynomite.yml

USER 10001:10001
WORKDIR /var/lib/dynomite

# dyn_listen (peers), listen (clients), stats_listen (admin, /metrics)
EXPOSE 8101 8102 22222

HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:22222/ping', timeout=2)"]

STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/dynomite-entrypoint"]
CMD ["twistd", "-n", "--pidfile=", "--logfile=-", "dynomite", "-c", "/etc/dynomite/dynomite.yml"]
